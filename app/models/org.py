"""Organisation: the OrgUnit tree (company › division › department › team, any depth).

Subtrees are found through a materialised path of ids ("/1/5/12/"), compared with a byte-wise
collation so that a prefix is a plain index range on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from flask_appbuilder.models.sqla import Model
from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import ScopedMixin, TimestampMixin

ORG_KINDS = ("company", "division", "department", "team")

PathString = String(1024).with_variant(String(1024, collation="C"), "postgresql")


class OrgUnit(TimestampMixin, ScopedMixin, Model):
    __tablename__ = "org_unit"
    __table_args__ = (
        UniqueConstraint("parent_id", "name", name="uq_org_unit_sibling_name"),
        Index("ix_org_unit_path", "path"),
    )
    __scope_org__ = "id"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    code: Mapped[str | None] = mapped_column(String(50), unique=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="team")
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("org_unit.id", ondelete="RESTRICT"), index=True
    )
    path: Mapped[str] = mapped_column(PathString, nullable=False, default="")
    depth: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    sort: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    parent: Mapped[OrgUnit | None] = relationship(
        "OrgUnit", remote_side=[id], back_populates="children"
    )
    children: Mapped[list[OrgUnit]] = relationship("OrgUnit", back_populates="parent")

    @property
    def ancestor_ids(self) -> list[int]:
        return [int(part) for part in self.path.strip("/").split("/") if part]

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__
