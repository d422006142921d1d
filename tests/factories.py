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


# --- calls and QA (issue #5) ---------------------------------------------------------------------------
def make_call_record(session, employee: Employee, **kw):
    """A CallRecord of `employee` (connected, 120 s, started now unless given), on the first call line
    (a simulator interface and a line are created when there is none)."""
    import datetime as dt

    from app.clock import utcnow
    from app.models.calls import CALL_ENDED, CallLine, CallRecord, OutboundInterface

    line = session.scalar(select(CallLine).order_by(CallLine.id).limit(1))
    if line is None:
        n = next(_seq)
        interface = OutboundInterface(name=f"Test interface {n}", provider="simulator")
        line = CallLine(name=f"Test line {n}", interface=interface)
        session.add_all([interface, line])
        session.flush()
    started = kw.pop("started_at", None) or utcnow() - dt.timedelta(minutes=10)
    duration = kw.pop("duration_seconds", 120)
    connected = kw.pop("connected", True)
    transcript = kw.pop("transcript", None)
    if transcript is not None and not isinstance(transcript, str):
        import json

        transcript = json.dumps(transcript, ensure_ascii=False)
    values = dict(
        interface_id=line.interface_id, line_id=line.id, employee_id=employee.id,
        org_unit_id=employee.org_unit_id, callee_phone=f"+86138{next(_seq):08d}", status=CALL_ENDED,
        started_at=started, answered_at=started + dt.timedelta(seconds=5) if connected else None,
        ended_at=started + dt.timedelta(seconds=5 + (duration if connected else 0)),
        duration_seconds=duration if connected else 0, transcript=transcript,
    )
    values.update(kw)
    call = CallRecord(**values)
    session.add(call)
    session.commit()
    return call


def make_scorecard(session, items=(), base_score=100, name=None):
    """A QaScorecard with check items given as dicts of QaCheckItem fields (name defaults per kind)."""
    from app.models.qa import QaCheckItem, QaScorecard

    card = QaScorecard(name=name or f"Scorecard {next(_seq)}", base_score=base_score)
    for position, spec in enumerate(items):
        spec = {"name": f"{spec.get('kind', 'manual')} {position}", "position": position, **spec}
        card.items.append(QaCheckItem(**spec))
    session.add(card)
    session.commit()
    return card


# --- outbound calling (telephony) --------------------------------------------------------------------
def make_interface(session, provider="simulator", options=None, name=None, **fields):
    import json as _json

    from app.models.calls import OutboundInterface

    n = next(_seq)
    iface = OutboundInterface(name=name or f"Interface {n}", provider=provider,
                              options=_json.dumps(options) if isinstance(options, dict) else options,
                              **fields)
    session.add(iface)
    session.commit()
    return iface


def make_line(session, interface, name=None, calling_windows=None, concurrency_limit=30, **fields):
    from app.models.calls import CallLine

    n = next(_seq)
    line = CallLine(name=name or f"Line {n}", interface_id=interface.id, calling_windows=calling_windows,
                    concurrency_limit=concurrency_limit, **fields)
    session.add(line)
    session.commit()
    return line


def make_number(session, line, number=None, area=None, daily_cap=200, **fields):
    from app.models.calls import CallNumber

    n = next(_seq)
    row = CallNumber(number=number or f"+86105{n:07d}", line_id=line.id, area=area, daily_cap=daily_cap,
                     **fields)
    session.add(row)
    session.commit()
    return row


def make_seat(session, line, emp, seat_no=None, active=True):
    from app.models.calls import Seat

    n = next(_seq)
    seat = Seat(seat_no=seat_no or f"S{n:05d}", line_id=line.id, employee_id=emp.id if emp else None,
                active=active)
    session.add(seat)
    session.commit()
    return seat
