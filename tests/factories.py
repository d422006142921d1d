"""Test data builders: real rows through the real models and services."""

from __future__ import annotations

import itertools

from sqlalchemy import select

from app.models.employee import Employee
from app.models.metadata import DictItem, DictType
from app.models.org import OrgUnit

_seq = itertools.count(1)
PASSWORD = "Test-Pass-2026"


def org_unit(session, name=None, parent=None, kind="team", code=None) -> OrgUnit:
    n = next(_seq)
    unit = OrgUnit(name=name or f"Unit {n}", kind=kind, parent=parent, code=code or f"U{n:05d}")
    session.add(unit)
    session.commit()
    return unit


def employee(session, unit, name=None, manager=None, hr_status="active", phone=None, no=None) -> Employee:
    n = next(_seq)
    emp = Employee(employee_no=no or f"T{n:05d}", name=name or f"Employee {n}", org_unit_id=unit.id,
                   manager_id=manager.id if manager else None, hr_status=hr_status,
                   phone=phone or f"+86139{n:08d}")
    session.add(emp)
    session.commit()
    return emp


def login_user(app, session, emp: Employee, *role_names: str, password: str = PASSWORD):
    """Give `emp` a login with the named roles; returns the user."""
    sm = app.appbuilder.sm
    roles = [sm.find_role(r) for r in role_names]
    assert all(roles), role_names
    user = sm.add_user(f"user{emp.id}", emp.name, "-", f"user{emp.id}@example.com", roles, password)
    assert user, "add_user failed"
    emp.user_id = user.id
    session.commit()
    return user


def employee_by_username(session, username: str) -> Employee:
    from app.models.employee import CrmUser

    return session.scalar(select(Employee).join(Employee.user).where(CrmUser.username == username))


def dict_item(session, type_code: str, code: str) -> DictItem:
    return session.scalar(
        select(DictItem).join(DictItem.dict_type).where(DictType.code == type_code, DictItem.code == code)
    )
