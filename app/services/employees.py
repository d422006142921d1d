"""Employees: validation of the HR record, and the bulk HR sync the HR system pushes.

HR sync policy: each row stands on its own. Bad rows are reported by index with a message per field
and change nothing; the good rows of the same batch are kept. Re-sending a batch changes nothing. A field
of the wrong type (an object where a string belongs) or longer than its column makes its row bad; it is
never cut to fit.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import aliased

from app import clock
from app.models.employee import HR_ACTIVE, HR_RESIGNED, HR_STATUSES, Employee
from app.models.metadata import DictItem, DictType
from app.models.org import OrgUnit
from app.services import audit, hr_transfer, inputs
from app.services.errors import DomainError
from app.services.phones import normalise_phone

LEVEL_DICT = "employee_level"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SYNC_FIELDS = ("name", "phone", "email", "org_unit_id", "position", "level_id", "hired_on",
               "left_on", "hr_status")
MAX_BATCH = 5000
# Field lengths of an HR row: the columns' own, so that nothing is cut to fit.
LIMITS = {name: Employee.__table__.c[name].type.length
          for name in ("employee_no", "name", "email", "position")}
CODE_MAX = 64  # an org unit, level or HR status code
PHONE_MAX = 32  # as typed, before it is normalised
Manager = aliased(Employee)


def manager_chain_has(session, manager_id: int | None, employee_id: int) -> bool:
    """True when `employee_id` appears in the management chain starting at `manager_id`."""
    seen = set()
    while manager_id is not None and manager_id not in seen:
        if manager_id == employee_id:
            return True
        seen.add(manager_id)
        manager_id = session.scalar(select(Employee.manager_id).where(Employee.id == manager_id))
    return False


def check_employee(session, emp: Employee, region: str = "CN") -> None:
    """Validate and normalise an employee before it is saved; raises DomainError naming the field."""
    if not (emp.employee_no or "").strip():
        raise DomainError("An employee number is required", field="employee_no")
    if not (emp.name or "").strip():
        raise DomainError("A name is required", field="name")
    emp.phone = normalise_phone(emp.phone, region)
    if emp.hr_status is None:  # the column default, which SQLAlchemy applies only at insert
        emp.hr_status = HR_ACTIVE
    if emp.email and not EMAIL.match(emp.email):
        raise DomainError("%(value)s is not an e-mail address", field="email", value=repr(emp.email))
    if emp.hr_status not in HR_STATUSES:
        raise DomainError("HR status must be one of %(values)s", field="hr_status",
                          values=", ".join(HR_STATUSES))
    if emp.hired_on and emp.left_on and emp.left_on < emp.hired_on:
        raise DomainError("The leaving date is before the hiring date", field="left_on")
    if emp.hr_status == HR_RESIGNED and emp.left_on is None:
        emp.left_on = clock.today()
    manager_id = emp.manager.id if emp.manager is not None else emp.manager_id
    if emp.id is not None and manager_id is not None and manager_chain_has(session, manager_id, emp.id):
        raise DomainError("An employee cannot report to themself or to one of their reports", field="manager")


@dataclass
class SyncResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[dict] = field(default_factory=list)
    transfers: list[dict] = field(default_factory=list)  # resignations: where the opportunities went

    def as_dict(self) -> dict:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged,
                "failed": len(self.errors), "errors": self.errors,
                **({"transfers": self.transfers} if self.transfers else {})}


def _date(problems: dict, name: str, value):
    text = inputs.text(problems, name, value, 10)
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        problems[name] = f"{inputs.quote(text)} is not a date (YYYY-MM-DD)"
        return None


def _parse_row(row, units: dict, levels: dict, region: str) -> tuple[dict, dict]:
    """Field values of one HR row, and its problems by field: a field of the wrong type or too long for
    its column is a problem of that row, never cut to fit."""
    problems: dict[str, str] = {}
    if not isinstance(row, dict):
        return {}, {"row": "Each row must be a JSON object"}
    values: dict = {}
    no = inputs.text(problems, "employee_no", row.get("employee_no"), LIMITS["employee_no"], required=True,
                     numbers=True)
    values["employee_no"] = no or ""
    values["name"] = inputs.text(problems, "name", row.get("name"), LIMITS["name"], required=True)
    unit_code = inputs.text(problems, "org_unit_code", row.get("org_unit_code"), CODE_MAX, required=True)
    if unit_code is not None and unit_code not in units:
        problems["org_unit_code"] = f"unknown org unit {inputs.quote(unit_code)}"
    values["org_unit_id"] = units.get(unit_code)
    raw_phone = inputs.text(problems, "phone", row.get("phone"), PHONE_MAX, numbers=True)
    try:
        values["phone"] = normalise_phone(raw_phone, region)
    except DomainError as exc:
        problems["phone"] = exc.message
    email = inputs.text(problems, "email", row.get("email"), LIMITS["email"])
    if email and not EMAIL.match(email):
        problems["email"] = f"{inputs.quote(email)} is not an e-mail address"
    values["email"] = email
    values["position"] = inputs.text(problems, "position", row.get("position"), LIMITS["position"])
    level_code = inputs.text(problems, "level_code", row.get("level_code"), CODE_MAX)
    if level_code is not None and level_code not in levels:
        problems["level_code"] = f"unknown level {inputs.quote(level_code)}"
    values["level_id"] = levels.get(level_code)
    status = inputs.text(problems, "hr_status", row.get("hr_status"), CODE_MAX) or HR_ACTIVE
    if status not in HR_STATUSES and "hr_status" not in problems:
        problems["hr_status"] = f"must be one of {', '.join(HR_STATUSES)}"
    values["hr_status"] = status
    values["hired_on"] = _date(problems, "hired_on", row.get("hired_on"))
    values["left_on"] = _date(problems, "left_on", row.get("left_on"))
    if values["hired_on"] and values["left_on"] and values["left_on"] < values["hired_on"]:
        problems["left_on"] = "before hired_on"
    values["manager_no"] = inputs.text(problems, "manager_no", row.get("manager_no"), LIMITS["employee_no"],
                                       numbers=True)
    if values["manager_no"] and values["manager_no"] == no:
        problems["manager_no"] = "an employee cannot be their own manager"
    return values, problems


def hr_sync(session, rows: list, region: str = "CN", actor: str = "hr-sync") -> SyncResult:
    """Upsert employees by employee_no from an HR batch (see the module docstring for the policy)."""
    if not isinstance(rows, list):
        raise DomainError("The body must be a JSON list of employee rows", status=400)
    if len(rows) > MAX_BATCH:
        raise DomainError("At most %(limit)s rows per batch", status=413, limit=MAX_BATCH)
    units = dict(session.execute(select(OrgUnit.code, OrgUnit.id).where(OrgUnit.code.is_not(None))).all())
    levels = dict(
        session.execute(
            select(DictItem.code, DictItem.id).join(DictItem.dict_type).where(DictType.code == LEVEL_DICT)
        ).all()
    )
    result = SyncResult()
    parsed: list[tuple[int, dict]] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        values, problems = _parse_row(row, units, levels, region)
        no = values.get("employee_no")
        if no and no in seen:
            problems["employee_no"] = f"repeats row {seen[no]}"
        elif no:
            seen[no] = index
        if problems:
            result.errors.append({"index": index, "employee_no": no or None, "errors": problems})
        else:
            parsed.append((index, values))
    existing = {
        e.employee_no: e
        for e in session.scalars(
            select(Employee).where(Employee.employee_no.in_([v["employee_no"] for _, v in parsed]))
        )
    }
    referenced = {v["manager_no"] for _, v in parsed if v["manager_no"]} - set(existing)
    db_nos = set(existing) | set(
        session.scalars(select(Employee.employee_no).where(Employee.employee_no.in_(referenced))))
    good = _without_manager_problems(session, parsed, db_nos, result)
    status: dict[str, str] = {}
    touched: dict[str, Employee] = {}
    resigned: list[Employee] = []
    with audit.acting_as(None, actor):
        for index, values in good:
            emp = existing.get(values["employee_no"])
            if emp is not None and emp.hr_status != HR_RESIGNED and values["hr_status"] == HR_RESIGNED:
                resigned.append(emp)  # the resignation flow runs once managers are set (hr_transfer)
            try:
                with session.begin_nested():
                    if emp is None:
                        emp = Employee(employee_no=values["employee_no"])
                        session.add(emp)
                        status[values["employee_no"]] = "created"
                    else:
                        status[values["employee_no"]] = "unchanged"
                    for name in SYNC_FIELDS:
                        if getattr(emp, name) != values[name]:
                            setattr(emp, name, values[name])
                            status[values["employee_no"]] = status[values["employee_no"]].replace(
                                "unchanged", "updated")
                    session.flush()
            except Exception as exc:  # a constraint the checks above did not foresee
                status.pop(values["employee_no"], None)
                result.errors.append({"index": index, "employee_no": values["employee_no"],
                                      "errors": {"row": str(getattr(exc, "orig", exc))[:200]}})
                continue
            touched[values["employee_no"]] = emp
        # Managers last, once every employee of the batch exists.
        wanted = {v["manager_no"] for _, v in good if v["manager_no"]}
        ids = dict(session.execute(
            select(Employee.employee_no, Employee.id).where(Employee.employee_no.in_(wanted))).all())
        for _, values in good:
            emp = touched.get(values["employee_no"])
            new_id = ids.get(values["manager_no"]) if values["manager_no"] else None
            if emp is not None and emp.manager_id != new_id:
                emp.manager_id = new_id
                status[values["employee_no"]] = status[values["employee_no"]].replace("unchanged", "updated")
        session.flush()
        result.transfers = [t.as_dict() for t in hr_transfer.on_resignations(
            session, [e for e in resigned if e.hr_status == HR_RESIGNED], actor=actor)]
    for outcome in status.values():
        setattr(result, outcome, getattr(result, outcome) + 1)
    result.errors.sort(key=lambda e: e["index"])
    return result


def _without_manager_problems(session, parsed, db_nos, result) -> list:
    """Drop (and report) rows whose manager is unknown or would close a reporting cycle."""
    current = dict(session.execute(
        select(Employee.employee_no, Manager.employee_no).join(Manager, Employee.manager)).all())
    good = list(parsed)
    while True:
        graph = dict(current)
        graph.update({v["employee_no"]: v["manager_no"] for _, v in good})
        known_nos = db_nos | {v["employee_no"] for _, v in good}
        bad = []
        for index, values in good:
            no, manager = values["employee_no"], values["manager_no"]
            if manager and manager not in known_nos:
                bad.append((index, values, f"unknown employee {manager!r}"))
                continue
            seen = set()
            while manager and manager not in seen:
                if manager == no:
                    bad.append((index, values, "would make a reporting cycle"))
                    break
                seen.add(manager)
                manager = graph.get(manager)
        if not bad:
            return good
        for index, values, message in bad:
            result.errors.append({"index": index, "employee_no": values["employee_no"],
                                  "errors": {"manager_no": message}})
        bad_nos = {v["employee_no"] for _, v, _ in bad}
        good = [(i, v) for i, v in good if v["employee_no"] not in bad_nos]
