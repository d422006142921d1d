"""The salesperson's workbench: my opportunities with the day's filters, quick follow-up entry, and
claiming from my pools (the forms post to app.views.opportunities.OpportunityView)."""

from __future__ import annotations

import datetime as dt

from flask import flash, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, literal, select, union_all
from sqlalchemy.orm import lazyload, selectinload

from app import clock
from app.clock import utcnow
from app.extensions import db
from app.models.employee import Employee
from app.models.sales import OWNED, ClaimCounter, Opportunity, Pool, SalesProfile
from app.security import policy
from app.security.scope import current_viewer
from app.services import circulation, dashboard, metadata, opportunities, pools, win_probability, workbench
from app.services.org import unit_path
from app.views.sales import QUICK_FILTERS, customer_label, entry_label

#: The day's working set: my first opportunities by next follow-up (the full list is one click away). The
#: page runs the same number of SQL statements however many I hold: relationships are loaded eagerly and
#: the recycle times in one go (app.services.workbench).
WORKBENCH_ROWS = 100
#: My figures on the workbench, in order: key of dashboard.my_figures → column label.
MY_FIGURES = [("leads", _l("Leads received")), ("contacted", _l("Contacted")),
              ("follow_ups", _l("Follow-ups")), ("won", _l("Won")), ("conversion", _l("Conversion")),
              ("median_first_contact_minutes", _l("Median time to first contact"))]
CLAIMABLE_ROWS = 50
#: How my opportunities are listed (?sort=): by next follow-up (the day's order), or likeliest to be won
#: first (the win probability; not scored ones last).
SORTS = {"next_followup": _l("Next follow-up first"), "likeliest": _l("Likeliest first")}
#: "I may claim" counts up to this many per pool, then shows "1000+" (a big pool holds 100,000s).
CLAIMABLE_COUNT_CAP = 1000


class WorkbenchView(BaseView):
    """My opportunities with the day's filters, quick follow-up entry, and claiming from my pools."""

    route_base = "/workbench"
    default_view = "index"
    class_permission_name = policy.WORKBENCH
    method_permission_name = {"index": "read"}

    @expose("/")
    @has_access
    def index(self):
        return self.page()

    def page(self, headcount: dict | None = None):
        """The workbench; `headcount`: the organisation strip the home page adds."""
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
        counts = {}  # one count each: each one uses its index (a single FILTERed count scans them all)
        for key, clause in clauses.items():
            query = select(func.count(Opportunity.id)).where(mine)
            counts[key] = session.scalar(query if clause is None else query.where(clause))
        by_stage = dict(session.execute(select(Opportunity.stage_id, func.count(Opportunity.id)).where(mine)
                                        .group_by(Opportunity.stage_id)).all())
        stages = metadata.dict_items(session, opportunities.STAGE_DICT)
        chosen = request.args.get("f", "all")
        query = select(Opportunity).where(mine)
        stage_code = chosen[6:] if chosen.startswith("stage:") else None
        full_list = {"quick": chosen if chosen in QUICK_FILTERS else "mine"}  # "All of them", same filter
        if stage_code is not None:
            stage_id = next((s.id for s in stages if s.code == stage_code), -1)
            query = query.where(Opportunity.stage_id == stage_id)
            full_list["_flt_0_stage"] = stage_id
        elif clauses.get(chosen) is not None:
            query = query.where(clauses[chosen])
        else:
            chosen = "all" if chosen not in clauses else chosen
        total = by_stage.get(stage_id, 0) if stage_code is not None else counts[chosen]
        sort = request.args.get("sort") if request.args.get("sort") in SORTS else "next_followup"
        # The owner is me: not joined in with every row (its own joined relationships weigh most).
        rows = list(session.scalars(query.options(selectinload(Opportunity.intention_level),
                                                  lazyload(Opportunity.owner))
                                    .order_by(*workbench.order_by(sort)).limit(WORKBENCH_ROWS)).unique())
        recycle = workbench.recycle_times(session, rows)
        rules = circulation.RuleCache(session)
        profile = session.get(SalesProfile, me.id)
        capacity = circulation.capacity_of(me, profile, rules(me.org_unit_id, None, None))
        claimable = list(session.scalars(
            select(Opportunity).where(pools.claimable_clause(session, me.id, viewer.org_path, now))
            .options(selectinload(Opportunity.intention_level), selectinload(Opportunity.pool),
                     lazyload(Opportunity.owner))
            .order_by(Opportunity.id).limit(CLAIMABLE_ROWS)).unique())
        return self.render_template(
            "crm/workbench.html", me=me, counts=counts, by_stage=by_stage, stages=stages, chosen=chosen,
            rows=rows, total=total, limit=WORKBENCH_ROWS, sort=sort, sorts=SORTS,
            win_factors=win_probability.factors_of(session, rows + claimable),
            full_list=url_for("OpportunityView.list", **full_list), recycle=recycle, capacity=capacity,
            load=profile.open_count if profile else counts["all"], pools=self._pools(session, me, now),
            claimable=claimable, quick_filters=QUICK_FILTERS, customer_label=customer_label,
            entry_label=entry_label,
            followup_types=metadata.dict_items(session, opportunities.FOLLOWUP_TYPE_DICT),
            lost_reasons=metadata.dict_items(session, opportunities.LOST_REASON_DICT),
            my=self._my_figures(session, me, now), my_labels=MY_FIGURES, headcount=headcount,
            can_claim=self.appbuilder.sm.has_access("can_claim", policy.OPPORTUNITY),
            can_write=self.appbuilder.sm.has_access("can_write", policy.OPPORTUNITY))

    @staticmethod
    def _my_figures(session, me: Employee, now: dt.datetime) -> dict:
        """My last 30 days beside my team's median (the dashboard's daily aggregates)."""
        period = dashboard.parse_filters({}, clock.local_date(now))
        return dashboard.my_figures(session, me.id, me.org_unit_id, period)

    @staticmethod
    def _pools(session, me: Employee, now: dt.datetime) -> list[dict]:
        """The pools I may claim from: how many I may claim there now, and today's allowance left."""
        day = clock.local_date(now)
        path = unit_path(session, me.org_unit_id)
        used = dict(session.execute(select(ClaimCounter.pool_id, ClaimCounter.claimed)
                                    .where(ClaimCounter.employee_id == me.id, ClaimCounter.day == day)).all())
        mine = list(session.scalars(pools.claimable_pools(session, me).order_by(Pool.name)))
        clause = pools.claimable_clause(session, me.id, path, now)
        # One statement, each pool's count stopping at the cap: reads at most cap + 1 rows of a pool.
        counts = [select(literal(p.id).label("pool_id"), func.count().label("n")).select_from(
            select(Opportunity.id).where(clause, Opportunity.pool_id == p.id)
            .limit(CLAIMABLE_COUNT_CAP + 1).subquery()) for p in mine]
        waiting = dict(session.execute(union_all(*counts)).all()) if counts else {}
        return [{"pool": p, "claimable": min(waiting.get(p.id, 0), CLAIMABLE_COUNT_CAP),
                 "more": waiting.get(p.id, 0) > CLAIMABLE_COUNT_CAP, "claimed_today": used.get(p.id, 0),
                 "left_today": max(p.daily_claim_limit - used.get(p.id, 0), 0)} for p in mine]
