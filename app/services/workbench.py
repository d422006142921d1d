"""The workbench's per-row figures in a fixed number of queries, however many opportunities are shown,
and the orders it lists my opportunities in.

`recycle_times` answers what `circulation.recycle_due_at(session, o, circulation.rule_of(session, o))`
answers for each row, but reads the rules, the org paths and the stage ids once for all rows.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from app.models.org import OrgUnit
from app.models.sales import Opportunity
from app.services import circulation
from app.services.org import ancestor_ids


def order_by(sort: str) -> tuple:
    """The ORDER BY of my opportunities: "likeliest" (the highest win probability first, not scored ones
    last), else by next follow-up (none last). Either sorts only my open opportunities (the owner index
    finds them: a salesperson holds hundreds, not millions); the id makes the order stable."""
    if sort == "likeliest":
        return (Opportunity.win_probability.is_(None), Opportunity.win_probability.desc(), Opportunity.id)
    return (Opportunity.next_followup_at.is_(None), Opportunity.next_followup_at, Opportunity.id)


def recycle_times(session, opps: list[Opportunity]) -> dict[int, dt.datetime | None]:
    """{opportunity id: when the idle rule would take it back (None: it will not)}: three queries."""
    if not opps:
        return {}
    units = {o.org_unit_id for o in opps if o.org_unit_id is not None}
    paths = dict(session.execute(select(OrgUnit.id, OrgUnit.path).where(OrgUnit.id.in_(units))).all()) \
        if units else {}
    ordered = circulation.ordered_rules(session)  # most specific first, as circulation_rule_for picks
    stages = circulation._stage_ids(session)
    chosen: dict[tuple, object] = {}

    def rule_for(unit_id, product_line_id, intention_level_id):
        key = (unit_id, product_line_id, intention_level_id)
        if key not in chosen:
            above = set(ancestor_ids(paths.get(unit_id)))
            chosen[key] = next(
                (rule for rule, _ in ordered if rule.org_unit_id in above
                 and rule.product_line_id in (None, product_line_id)
                 and rule.intention_level_id in (None, intention_level_id)), None)
        return chosen[key]

    return {o.id: circulation.recycle_due_at(session, o, rule_for(o.org_unit_id, o.product_line_id,
                                                                  o.intention_level_id), stages=stages)
            for o in opps}
