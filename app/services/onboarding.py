"""Onboarding: one command creates a person's employee record, their login and its roles together.

Everything is checked before anything is written, and it all goes in the caller's one transaction: a
refusal (DomainError naming the form field) leaves nothing behind. The rows themselves are audited by the
change capture of app.services.audit (employee, user, roles); the command adds one "create" event of target
type "onboarding" that says who was onboarded as which login with which roles.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from flask_appbuilder.exceptions import PasswordComplexityValidationError
from sqlalchemy import func, select

from app.models.employee import HR_ACTIVE, HR_RESIGNED, CrmUser, Employee
from app.models.org import OrgUnit
from app.security import policy
from app.security.passwords import validate_password
from app.services import audit
from app.services.employees import LIMITS, check_employee
from app.services.errors import DomainError

USERNAME_MAX = CrmUser.__table__.c.username.type.length
#: Roles a person can be given here (other systems' accounts are not people).
PERSON_ROLES = ("Admin", *policy.HUMAN_ROLES)


@dataclass
class Onboarding:
    """What the form (or the CLI) asks for."""

    employee_no: str
    name: str
    org_unit_id: int | None
    username: str
    password: str
    roles: list[str] = field(default_factory=list)
    email: str | None = None
    phone: str | None = None
    position: str | None = None
    manager_id: int | None = None
    hired_on: dt.date | None = None


def _split_name(name: str) -> tuple[str, str]:
    """ab_user wants a first and last name: 赵丽 → 赵 / 丽; "Ann Lee" → Ann / Lee."""
    if " " in name:
        first, last = name.split(" ", 1)
        return first, last.strip() or first
    return name[:1], name[1:] or name


def _check_login(session, req: Onboarding, may_grant_admin: bool) -> None:
    username = (req.username or "").strip()
    if not username:
        raise DomainError("A username is required", field="username")
    if len(username) > USERNAME_MAX or any(c.isspace() for c in username):
        raise DomainError("A username has no spaces and at most %(n)d characters", field="username",
                          n=USERNAME_MAX)
    if session.scalar(select(CrmUser.id).where(func.lower(CrmUser.username) == username.lower())):
        raise DomainError("The username %(value)s is taken", field="username", value=username)
    if not req.email:
        raise DomainError("An e-mail address is required for the login", field="email")
    if session.scalar(select(CrmUser.id).where(func.lower(CrmUser.email) == req.email.lower())):
        raise DomainError("The e-mail address %(value)s already has a login", field="email", value=req.email)
    try:
        validate_password(req.password or "")
    except PasswordComplexityValidationError:
        raise DomainError("The password needs at least %(n)d characters with a lower-case letter, an "
                          "upper-case letter and a digit", field="password", n=10) from None
    if not req.roles:
        raise DomainError("Choose at least one role", field="roles")
    for role in req.roles:
        if role not in PERSON_ROLES or (role == "Admin" and not may_grant_admin):
            raise DomainError("%(value)s is not a role you can give", field="roles", value=role)


def onboard(session, sm, req: Onboarding, *, may_grant_admin: bool = False, region: str = "CN") -> Employee:
    """Create the employee, their login (active, with `roles`) and link them; returns the employee."""
    req.employee_no = (req.employee_no or "").strip()
    req.name = (req.name or "").strip()
    req.email = (req.email or "").strip() or None
    for name in ("employee_no", "name", "email", "position"):
        value = getattr(req, name)
        if value and len(value) > LIMITS[name]:
            raise DomainError("At most %(n)d characters", field=name, n=LIMITS[name])
    if req.employee_no and session.scalar(select(Employee.id).where(Employee.employee_no == req.employee_no)):
        raise DomainError("The employee number %(value)s is taken", field="employee_no",
                          value=req.employee_no)
    unit = session.get(OrgUnit, req.org_unit_id) if req.org_unit_id else None
    if unit is None:
        raise DomainError("Choose an org unit", field="org_unit")
    manager = session.get(Employee, req.manager_id) if req.manager_id else None
    if req.manager_id and (manager is None or manager.hr_status == HR_RESIGNED):
        raise DomainError("Choose a manager who works here", field="manager")
    emp = Employee(employee_no=req.employee_no, name=req.name, phone=req.phone or None, email=req.email,
                   org_unit_id=unit.id, position=(req.position or "").strip() or None,
                   manager_id=req.manager_id,
                   hired_on=req.hired_on, hr_status=HR_ACTIVE)
    check_employee(session, emp, region)  # required fields, phone, e-mail (before anything is added)
    _check_login(session, req, may_grant_admin)
    roles = [sm.find_role(name) for name in req.roles]
    if None in roles:
        raise DomainError("%(value)s is not a role you can give", field="roles", value=", ".join(req.roles))
    first, last = _split_name(req.name)
    user = sm.add_user(req.username.strip(), first, last, req.email, roles, password=req.password,
                       commit=False)
    if not user:  # FAB swallowed a database error
        raise DomainError("The login could not be created", field="username", status=409)
    emp.user = user
    session.add(emp)
    session.flush()
    audit.record(session, "create", target_type="onboarding", target_id=emp.id,
                 summary=f"{emp} as {user.username} ({', '.join(req.roles)})")
    return emp
