"""Employees and their login users.

An `Employee` is the HR record; `CrmUser` (FAB's ab_user, extended) is the login. A user whose employee
has resigned is not active: FAB refuses the login and drops live sessions and JWTs on the next request.
"""

from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla import Model
from flask_appbuilder.security.sqla.models import User
from sqlalchemy import Date, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

from app.models.base import ScopedMixin, TimestampMixin

HR_ACTIVE = "active"
HR_ON_LEAVE = "on_leave"
HR_RESIGNED = "resigned"
HR_STATUSES = (HR_ACTIVE, HR_ON_LEAVE, HR_RESIGNED)


class CrmUser(User):
    __tablename__ = "ab_user"

    def get_full_name(self) -> str:
        first, last = self.first_name or "", self.last_name or ""
        # Chinese names are written without a space: 赵丽, not 赵 丽.
        return f"{first}{last}" if not (first + last).isascii() else f"{first} {last}".strip()

    __repr__ = get_full_name

    @property
    def is_active(self) -> bool:
        employee = self.employee
        return bool(self.active) and (employee is None or employee.hr_status != HR_RESIGNED)


class Employee(TimestampMixin, ScopedMixin, Model):
    __tablename__ = "employee"
    __scope_owner__ = "id"
    __scope_org__ = "org_unit_id"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    employee_no: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    org_unit_id: Mapped[int] = mapped_column(
        ForeignKey("org_unit.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    position: Mapped[str | None] = mapped_column(String(64))
    level_id: Mapped[int | None] = mapped_column(ForeignKey("dict_item.id", ondelete="RESTRICT"))
    manager_id: Mapped[int | None] = mapped_column(
        ForeignKey("employee.id", ondelete="SET NULL"), index=True
    )
    hired_on: Mapped[dt.date | None] = mapped_column(Date)
    left_on: Mapped[dt.date | None] = mapped_column(Date)
    hr_status: Mapped[str] = mapped_column(String(16), nullable=False, default=HR_ACTIVE, index=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("ab_user.id", ondelete="SET NULL"), unique=True
    )

    # No innerjoin: chained after the API's outer join to `manager` it would drop employees without one.
    org_unit = relationship("OrgUnit", lazy="joined")
    level = relationship("DictItem", lazy="joined")
    manager: Mapped[Employee | None] = relationship(
        "Employee", remote_side=[id], backref="reports"
    )
    user = relationship(
        CrmUser, backref=backref("employee", uselist=False, lazy="joined"), lazy="joined"
    )

    def __str__(self) -> str:
        return f"{self.name} ({self.employee_no})"

    __repr__ = __str__
