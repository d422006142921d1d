"""The salesperson's workbench: my opportunities with the day's filters, quick follow-up entry, and
claiming from my pools (the forms post to app.views.opportunities.OpportunityView)."""

from __future__ import annotations

import datetime as dt

from flask import flash, request
from flask_appbuilder import BaseView
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from app import clock
from app.clock import utcnow
from app.extensions import db
from app.models.employee import Employee
from app.models.sales import OWNED, ClaimCounter, Opportunity, Pool, SalesProfile
from app.security import policy
from app.security.scope import current_viewer
from app.services import circulation, metadata, opportunities, pools
from app.services.org import unit_path
from app.views.sales import QUICK_FILTERS, customer_label, entry_label

WORKBENCH_ROWS = 200
CLAIMABLE_ROWS = 50


class WorkbenchView(BaseView):
    """My opportunities with the day's filters, quick follow-up entry, and claiming from my pools."""

    route_base = "/workbench"
    default_view = "index"
    class_permission_name = policy.WORKBENCH
    method_permission_name = {"index": "read"}

    @expose("/")
    @has_access
    def index(self):
        session = db.session
        viewer = current_viewer()
        now = utcnow()
        me = session.get(Employee, viewer.employee_id) if viewer.employee_id else None
        if me is None:
            flash(str(_l("Your login is not linked to an employee: there is no workbench for it.")),
                  "warning")
            return self.render_template("crm/workbench.html", me=None)
        mine = (Opportunity.owner_id == me.id) & (Opportunity.status == OWNED)
        clauses = {"all": None, "due_today": opportunities.due_today_clause(now),
                   "overdue": opportunities.overdue_clause(now),
                   "recycle_soon": circulation.due_within(session, now)}
        counts = {}
        for key, clause in clauses.items():
            query = select(func.count(Opportunity.id)).where(mine)
            counts[key] = session.scalar(query if clause is None else query.where(clause))
        by_stage = dict(session.execute(select(Opportunity.stage_id, func.count(Opportunity.id)).where(mine)
                                        .group_by(Opportunity.stage_id)).all())
        stages = metadata.dict_items(session, opportunities.STAGE_DICT)
        chosen = request.args.get("f", "all")
        query = select(Opportunity).where(mine)
        stage_code = chosen[6:] if chosen.startswith("stage:") else None
        if stage_code is not None:
            stage_id = next((s.id for s in stages if s.code == stage_code), -1)
            query = query.where(Opportunity.stage_id == stage_id)
        elif clauses.get(chosen) is not None:
            query = query.where(clauses[chosen])
        else:
            chosen = "all" if chosen not in clauses else chosen
        total = session.scalar(select(func.count()).select_from(query.subquery()))
        rows = list(session.scalars(query.order_by(Opportunity.next_followup_at.is_(None),
                                                   Opportunity.next_followup_at, Opportunity.id)
                                    .limit(WORKBENCH_ROWS)).unique())
        rules = circulation.RuleCache(session)
        recycle = {o.id: circulation.recycle_due_at(session, o, rules(o.org_unit_id, o.product_line_id,
                                                                        o.intention_level_id)) for o in rows}
        profile = session.get(SalesProfile, me.id)
        capacity = circulation.capacity_of(me, profile, rules(me.org_unit_id, None, None))
        claimable = list(session.scalars(
            select(Opportunity).where(pools.claimable_clause(session, me.id, viewer.org_path, now))
            .order_by(Opportunity.id).limit(CLAIMABLE_ROWS)).unique())
        return self.render_template(
            "crm/workbench.html", me=me, counts=counts, by_stage=by_stage, stages=stages, chosen=chosen,
            rows=rows, total=total, limit=WORKBENCH_ROWS, recycle=recycle, capacity=capacity,
            load=profile.open_count if profile else counts["all"], pools=self._pools(session, me, now),
            claimable=claimable, quick_filters=QUICK_FILTERS, customer_label=customer_label,
            entry_label=entry_label,
            followup_types=metadata.dict_items(session, opportunities.FOLLOWUP_TYPE_DICT),
            lost_reasons=metadata.dict_items(session, opportunities.LOST_REASON_DICT),
            can_claim=self.appbuilder.sm.has_access("can_claim", policy.OPPORTUNITY),
            can_write=self.appbuilder.sm.has_access("can_write", policy.OPPORTUNITY))

    @staticmethod
    def _pools(session, me: Employee, now: dt.datetime) -> list[dict]:
        """The pools I may claim from: how many I may claim there now, and today's allowance left."""
        day = clock.local_date(now)
        path = unit_path(session, me.org_unit_id)
        used = dict(session.execute(select(ClaimCounter.pool_id, ClaimCounter.claimed)
                                    .where(ClaimCounter.employee_id == me.id, ClaimCounter.day == day)).all())
        waiting = dict(session.execute(
            select(Opportunity.pool_id, func.count(Opportunity.id))
            .where(pools.claimable_clause(session, me.id, path, now))
            .group_by(Opportunity.pool_id)).all())
        return [{"pool": p, "claimable": waiting.get(p.id, 0), "claimed_today": used.get(p.id, 0),
                 "left_today": max(p.daily_claim_limit - used.get(p.id, 0), 0)}
                for p in session.scalars(pools.claimable_pools(session, me).order_by(Pool.name))]
