"""Metadata: dictionaries (DictType / DictItem) that drive dropdowns, and typed ConfigItems."""

from __future__ import annotations

from flask import has_request_context
from flask_appbuilder.models.sqla import Model
from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import TimestampMixin

CONFIG_VALUE_TYPES = ("int", "bool", "str", "duration", "json")


def _current_language() -> str:
    if has_request_context():
        from flask_babel import get_locale

        locale = get_locale()
        return locale.language if locale else "zh"
    return "zh"


class DictType(TimestampMixin, Model):
    __tablename__ = "dict_type"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(50), unique=True, nullable=False)
    name_zh: Mapped[str] = mapped_column(String(100), nullable=False)
    name_en: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(String(255))

    items: Mapped[list[DictItem]] = relationship(
        "DictItem", back_populates="dict_type", order_by="DictItem.sort"
    )

    def __str__(self) -> str:
        return self.name_en if _current_language() == "en" else self.name_zh

    __repr__ = __str__


class DictItem(TimestampMixin, Model):
    __tablename__ = "dict_item"
    __table_args__ = (UniqueConstraint("dict_type_id", "code", name="uq_dict_item_code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dict_type_id: Mapped[int] = mapped_column(
        ForeignKey("dict_type.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    code: Mapped[str] = mapped_column(String(50), nullable=False)
    label_zh: Mapped[str] = mapped_column(String(100), nullable=False)
    label_en: Mapped[str] = mapped_column(String(100), nullable=False)
    sort: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    dict_type: Mapped[DictType] = relationship("DictType", back_populates="items")

    @property
    def label(self) -> str:
        return self.label_en if _current_language() == "en" else self.label_zh

    def __str__(self) -> str:
        return self.label

    __repr__ = __str__


class ConfigItem(TimestampMixin, Model):
    __tablename__ = "config_item"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    value_type: Mapped[str] = mapped_column(String(10), nullable=False, default="str")
    value: Mapped[str] = mapped_column(Text, nullable=False, default="")
    description: Mapped[str | None] = mapped_column(String(255))

    def __str__(self) -> str:
        return self.key

    __repr__ = __str__
