"""Public pools: which pools a salesperson may claim from, what they may claim now, and where an
opportunity goes back to (a pool's settings are checked in app.services.dispatch_rules).

A pool belongs to an org unit (and optionally a product line); everyone in that unit's subtree may claim
from it, within its daily claim limit, except from opportunities they held and still cool off from.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, exists, false, not_, or_, select

from app.models.employee import Employee
from app.models.org import OrgUnit
from app.models.sales import POOLED, Opportunity, OwnerCooling, Pool
from app.services import metadata
from app.services.org import ancestor_ids, unit_path


def claimable_pools(session, employee: Employee, product_line_id: int | None = None):
    """SELECT of the enabled pools the employee may claim from: of an ancestor-or-self org unit, and
    (when a product line is given) of that product line or of none."""
    path = unit_path(session, employee.org_unit_id)
    return pools_over(path, product_line_id)


def pools_over(org_unit_path: str | None, product_line_id: int | None = None):
    """SELECT of the enabled pools of the units on `org_unit_path` (an org unit and its ancestors)."""
    units = ancestor_ids(org_unit_path) or [-1]
    query = select(Pool).where(Pool.enabled.is_(True), Pool.org_unit_id.in_(units))
    if product_line_id is not None:
        query = query.where(or_(Pool.product_line_id.is_(None), Pool.product_line_id == product_line_id))
    return query


def pooled_over(org_unit_path: str | None):
    """WHERE condition: pooled opportunities in the pools of the units on `org_unit_path`, whether or not
    the viewer may claim each one right now (what the pool page shows them); None when there is no path."""
    units = ancestor_ids(org_unit_path)
    if not units:
        return None
    return Opportunity.pool_id.in_(select(Pool.id).where(Pool.org_unit_id.in_(units))) & (
        Opportunity.status == POOLED)


def claimable_clause(session, employee_id: int | None, org_unit_path: str | None, now: dt.datetime):
    """WHERE condition: pooled opportunities this employee may claim now (pool of an ancestor-or-self
    unit whose product line is none or the opportunity's; not locked; the employee not cooling off)."""
    units = ancestor_ids(org_unit_path)
    if employee_id is None or not units:
        return false()
    in_pool = exists().where(
        Pool.id == Opportunity.pool_id, Pool.enabled.is_(True), Pool.org_unit_id.in_(units),
        or_(Pool.product_line_id.is_(None), Pool.product_line_id == Opportunity.product_line_id))
    cooling = exists().where(OwnerCooling.opportunity_id == Opportunity.id,
                             OwnerCooling.employee_id == employee_id, OwnerCooling.until > now)
    return and_(Opportunity.status == POOLED, Opportunity.locked.is_(False), in_pool, not_(cooling))


def best_pool(session, org_unit_path: str | None, product_line_id: int | None) -> Pool | None:
    """The pool an opportunity of that unit and product line goes back to: the deepest enabled pool over
    the unit, one of that product line before one of none; else the configured fallback pool."""
    units = ancestor_ids(org_unit_path)
    if units:
        rows = session.execute(
            select(Pool, OrgUnit.path).join(OrgUnit, OrgUnit.id == Pool.org_unit_id)
            .where(Pool.enabled.is_(True), Pool.org_unit_id.in_(units),
                   or_(Pool.product_line_id.is_(None), Pool.product_line_id == product_line_id))
        ).all()
        if rows:
            return min(rows, key=lambda r: (-len(r[1]), r[0].product_line_id is None, r[0].id))[0]
    name = metadata.config_value(session, "dispatch.fallback_pool", None)
    if name:
        return session.scalar(select(Pool).where(Pool.name == name, Pool.enabled.is_(True)))
    return None

