"""QA pages: scorecards and their check items, sampling plans ("Run now"), and the QA workbench — the
inspector's queue, the inspection page (call, transcript with the machine's hits, scoring form), the
agent's appeal and the inspector's decision.

Rows come through the data scope (QaInspection: the agent owns it, the assigned inspector sees it, the
org rule covers the rest); the workflow rules live in app.services.qa.inspections.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import abort, request, url_for
from flask_appbuilder.fieldwidgets import Select2Widget
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape
from sqlalchemy import func, select
from wtforms import BooleanField, SelectField

from app.clock import utcnow
from app.extensions import db, rq
from app.models.employee import Employee
from app.models.qa import (
    APPEAL_UPHELD,
    CHECK_FORBIDDEN,
    CHECK_REQUIRED,
    CHECK_SILENCE,
    QA_APPEALED,
    QA_FINAL,
    QA_PENDING,
    QA_SCORED,
    QaCheckItem,
    QaInspection,
    QaPlan,
    QaScorecard,
)
from app.security import policy
from app.security.masking import mask_phone
from app.security.scope import current_viewer
from app.services.errors import DomainError
from app.services.qa import checks, inspections, sampling, scoring
from app.views import labels
from app.views.base import CrmModelView, refuse_delete_in_use
from app.views.sales import PageShowMixin
from app.views.times import local_dt
from app.views.uow import flash_result

# The codes' labels (app/views/labels.py): "pending" here is 待质检, not an SMS's 待发送.
KIND_LABELS = dict(labels.choices("qa_check.kind"))
MODE_LABELS = dict(labels.choices("qa_plan.mode"))
PERIOD_LABELS = dict(labels.choices("qa_plan.period"))
STATUS_LABELS = dict(labels.choices("qa.status"))
DECISION_LABELS = dict(labels.choices("qa.appeal_decision"))
QUEUE_FILTERS = {"pending": _l("Awaiting inspection"), "scored": _l("Scored"), "appealed": _l("Appealed"),
                 "final": _l("Final"), "assigned": _l("Assigned to me"), "my_calls": _l("My calls")}
LABELS = {
    "name": _l("Name"), "description": _l("Description"), "base_score": _l("Base score"),
    "enabled": _l("Enabled"), "items": _l("Check items"), "scorecard": _l("Scorecard"), "kind": _l("Kind"),
    "points": _l("Points (− deducts when violated, + adds when met)"), "keywords": _l("Keywords"),
    "threshold": _l("Threshold"), "position": _l("Order"), "org_unit": _l("Org unit (and below)"),
    "mode": _l("Sampling mode"), "amount": _l("Amount (calls or %)"),
    "min_duration": _l("Min talk time (s)"), "max_duration": _l("Max talk time (s)"),
    "connected_only": _l("Connected calls only"), "period": _l("Period"), "inspectors": _l("Inspectors"),
    "last_sampled_period": _l("Last sampled period"), "id": _l("No."), "call": _l("Call"),
    "agent": _l("Agent"), "inspector": _l("Inspector"), "plan": _l("Plan"), "status": _l("Status"),
    "machine_score": _l("Machine score"), "score": _l("Score"), "scored_at": _l("Scored at"),
    "appealed_at": _l("Appealed at"), "appeal_decision": _l("Appeal decision"),
    "decided_at": _l("Decided at"), "created_at": _l("Created at"),
    "updated_at": _l("Updated at"), "score_range": _l("Score range"),
}
HELP = {
    "keywords": _l("One a line; a|b on one line means either will do. Forbidden: any hit fails the item. "
                   "Required: every line must be said by the agent."),
    "threshold": _l("Silence: the longest allowed gap in seconds. Speech rate: the most characters per "
                    "minute of the agent's speech."),
    "base_score": _l("The score before items deduct or add points; the result is kept within 0–100."),
    "amount": _l("Count mode: calls per agent and period. Percent mode: percent of each agent's calls."),
}
NO_CRUD = {"add", "edit", "delete", "download"}
SAMPLING_QUEUED = _l("Sampling queued: the inspections appear within a minute")


def _choice(label, labels):
    return SelectField(label, choices=list(labels.items()), widget=Select2Widget())


def _safe_url(url: str | None) -> str | None:
    """Only http(s) links are shown (a provider could send anything)."""
    return url if url and urlsplit(url).scheme in ("http", "https") else None


def _back(pk) -> str:
    return url_for("QaInspectionView.show", pk=pk)


# --- scorecards -------------------------------------------------------------------------------------------
class QaCheckItemView(CrmModelView):
    datamodel = SQLAInterface(QaCheckItem)
    class_permission_name = policy.QA_SCORECARD
    list_title = show_title = _l("Check Items")
    add_title, edit_title = _l("Add Check Item"), _l("Edit Check Item")
    list_columns = ["scorecard", "position", "name", "kind", "points", "keywords", "threshold"]
    add_columns = edit_columns = ["scorecard", "position", "name", "kind", "points", "keywords", "threshold"]
    show_columns = add_columns + ["updated_at"]
    search_columns = ["scorecard", "name", "kind"]
    base_order = ("position", "asc")
    add_form_extra_fields = edit_form_extra_fields = {"kind": _choice(_l("Kind"), KIND_LABELS)}
    formatters_columns = {"kind": lambda v: KIND_LABELS.get(v, v)}
    label_columns = LABELS
    description_columns = HELP

    def check_item(self, item, creating):
        scoring.check_item(item, scoring.siblings_of(item))


class QaScorecardView(CrmModelView):
    datamodel = SQLAInterface(QaScorecard)
    class_permission_name = policy.QA_SCORECARD
    list_title = show_title = _l("Scorecards")
    add_title, edit_title = _l("Add Scorecard"), _l("Edit Scorecard")
    show_template = "qa/scorecard_show.html"
    list_columns = ["name", "base_score", "enabled", "updated_at"]
    add_columns = edit_columns = ["name", "description", "base_score", "enabled"]
    show_columns = ["name", "description", "base_score", "enabled", "updated_at"]
    search_columns = ["name", "enabled"]
    base_order = ("name", "asc")
    related_views = [QaCheckItemView]
    add_form_extra_fields = edit_form_extra_fields = {"enabled": BooleanField(_l("Enabled"), default=True)}
    label_columns = LABELS
    description_columns = HELP

    def check_item(self, item, creating):
        scoring.check_scorecard(item)

    def page_context(self, item) -> dict:
        if item is None:
            abort(404)
        worst, best = scoring.score_range(item.base_score, [i.points for i in item.items])
        return {"item": item, "worst": worst, "best": best}

    @expose("/show/<pk>", methods=["GET"])
    @has_access
    def show(self, pk):
        """FAB's page with the check items listed below it, and the range of possible scores."""
        pk = self._deserialize_pk_if_composite(pk)
        widgets = self._show(pk)
        item = self.datamodel.get(pk, self._base_filters)
        return self.render_template(self.show_template, pk=pk, title=self.show_title, widgets=widgets,
                                    related_views=self._related_views, **self.page_context(item))

    def check_delete(self, item):
        refuse_delete_in_use(item, QaPlan.scorecard_id, QaInspection.scorecard_id)


# --- sampling plans ---------------------------------------------------------------------------------------
class QaPlanView(PageShowMixin, CrmModelView):
    datamodel = SQLAInterface(QaPlan)
    class_permission_name = policy.QA_PLAN
    method_permission_name = {**policy.METHOD_PERMISSIONS, "run_now": "write"}
    list_title = show_title = _l("Sampling Plans")
    add_title, edit_title = _l("Add Sampling Plan"), _l("Edit Sampling Plan")
    show_template = "qa/plan_show.html"
    list_columns = ["name", "scorecard", "org_unit", "mode", "amount", "period", "inspectors", "enabled",
                    "last_sampled_period"]
    add_columns = edit_columns = ["name", "scorecard", "org_unit", "mode", "amount", "period", "min_duration",
                                  "max_duration", "connected_only", "inspectors", "enabled"]
    show_columns = add_columns + ["last_sampled_period", "updated_at"]
    search_columns = ["name", "scorecard", "org_unit", "enabled"]
    base_order = ("name", "asc")
    add_form_extra_fields = edit_form_extra_fields = {
        "mode": _choice(_l("Sampling mode"), MODE_LABELS),
        "period": _choice(_l("Period"), PERIOD_LABELS),
        "connected_only": BooleanField(_l("Connected calls only"), default=True),
        "enabled": BooleanField(_l("Enabled"), default=True),
    }
    formatters_columns = {"mode": lambda v: MODE_LABELS.get(v, v),
                          "period": lambda v: PERIOD_LABELS.get(v, v),
                          "inspectors": lambda v: ", ".join(e.name for e in v or [])}
    label_columns = LABELS
    description_columns = HELP

    def check_item(self, item, creating):
        sampling.check_plan(item)

    def check_delete(self, item):
        refuse_delete_in_use(item, QaInspection.plan_id)

    def page_context(self, item) -> dict:
        if item is None:
            abort(404)
        rows = db.session.execute(
            select(QaInspection.period, QaInspection.inspector_id, QaInspection.status, func.count())
            .where(QaInspection.plan_id == item.id)
            .group_by(QaInspection.period, QaInspection.inspector_id, QaInspection.status)
            .order_by(QaInspection.period.desc())).all()
        names = dict(db.session.execute(select(Employee.id, Employee.name).where(
            Employee.id.in_({r[1] for r in rows if r[1] is not None}))).all())
        stats: dict[str, dict] = {}
        for period, inspector, status, count in rows:
            row = stats.setdefault(period or "", {}).setdefault(names.get(inspector, "—"), {})
            row[status] = count
        now = utcnow()
        return {"item": item, "stats": stats, "status_labels": STATUS_LABELS,
                "can_run": self.appbuilder.sm.has_access("can_write", policy.QA_PLAN),
                "previous": sampling.period_at(db.session, item.period, now, sampling.PREVIOUS).key,
                "current": sampling.period_at(db.session, item.period, now, sampling.CURRENT).key}

    @expose("/run_now/<pk>", methods=["POST"])
    @has_access
    def run_now(self, pk):
        """Queue a sampling run of the plan's previous (default) or current period."""
        item = self._scoped_get(pk)
        if item is None:
            abort(404)
        which = request.form.get("which", sampling.PREVIOUS)
        if which not in (sampling.PREVIOUS, sampling.CURRENT):
            abort(400)
        from app.jobs.qa import enqueue_sample

        def queue_run():
            sampling.check_runnable(item, which)
            enqueue_sample(rq.queue("default"), item.id, which)

        return flash_result(queue_run, back=url_for("QaPlanView.show", pk=item.id),
                            success=lambda _result: SAMPLING_QUEUED)


# --- the QA workbench -------------------------------------------------------------------------------------
class QueueFilter(BaseFilter):
    """The workbench tabs (?queue=pending|scored|appealed|final|assigned|my_calls), on list and export."""

    name = "Queue"
    arg_name = "queue"

    def apply(self, query, value):
        from flask import has_request_context

        queue = request.args.get("queue") if has_request_context() else None
        me = current_viewer().employee_id
        if queue in (QA_PENDING, QA_SCORED, QA_APPEALED, QA_FINAL):
            return query.filter(QaInspection.status == queue)
        if queue == "assigned":
            return query.filter(QaInspection.inspector_id == me)
        if queue == "my_calls":
            return query.filter(QaInspection.agent_id == me)
        return query


def _call_label(call) -> str:
    return "" if call is None else f"#{call.id} {local_dt(call.started_at, seconds=False)}"


class QaInspectionView(PageShowMixin, CrmModelView):
    datamodel = SQLAInterface(QaInspection)
    class_permission_name = policy.QA_INSPECTION
    exclude_route_methods = NO_CRUD
    method_permission_name = {**policy.METHOD_PERMISSIONS, "add": "crud_disabled", "edit": "crud_disabled",
                              "delete": "crud_disabled", "score": "write", "decide": "write",
                              "appeal": "appeal"}
    list_title = show_title = _l("QA Workbench")
    add_title, edit_title = _l("Add QA Inspection"), _l("Edit QA Inspection")
    list_template = "qa/inspection_list.html"
    show_template = "qa/inspection_show.html"
    list_columns = ["id", "call", "agent", "inspector", "status", "machine_score", "score", "period",
                    "scored_at", "appealed_at"]
    show_columns = ["id", "status", "agent", "inspector", "plan", "period", "scorecard", "machine_score",
                    "score", "scored_at", "appealed_at", "appeal_decision", "decided_at"]
    export_columns = ["id", "call_id", "agent", "inspector", "plan", "period", "status", "machine_score",
                      "score", "scored_at", "appealed_at", "appeal_decision", "decided_at"]
    search_columns = ["status", "agent", "inspector", "plan", "period", "score", "scored_at"]
    order_columns = ["id", "status", "machine_score", "score", "scored_at", "appealed_at"]
    base_order = ("id", "desc")
    base_filters = [["id", QueueFilter, lambda: []]]
    formatters_columns = {"status": lambda v: STATUS_LABELS.get(v, v), "call": _call_label,
                          "appeal_decision": lambda v: DECISION_LABELS.get(v, v)}
    label_columns = LABELS

    def render_template(self, template, **kwargs):
        kwargs.setdefault("queue_filters", QUEUE_FILTERS)
        return super().render_template(template, **kwargs)

    def page_context(self, item) -> dict:
        if item is None:
            abort(404)
        return inspection_page(item, self.appbuilder.sm)

    def _visible(self, pk) -> QaInspection:
        item = self._scoped_get(pk)
        if item is None:
            abort(404)
        return item

    def _me(self) -> int:
        me = current_viewer().employee_id
        if me is None:
            raise DomainError("Your login is not linked to an employee", status=403)
        return me

    def _run(self, pk, work, success):
        """One workflow command on a visible inspection, then back to its page."""
        pk = self._visible(pk).id
        return flash_result(lambda: work(pk), back=_back(pk), success=lambda _result: success, labels=LABELS)

    @expose("/score/<pk>", methods=["POST"])
    @has_access
    def score(self, pk):
        return self._run(pk, lambda i: inspections.score(
            db.session, i, self._me(), inspections.parse_judgements(request.form),
            request.form.get("comment"), utcnow()), _l("Inspection scored"))

    @expose("/appeal/<pk>", methods=["POST"])
    @has_access
    def appeal(self, pk):
        return self._run(pk, lambda i: inspections.appeal(
            db.session, i, self._me(), request.form.get("reason"), utcnow()), _l("Appeal submitted"))

    @expose("/decide/<pk>", methods=["POST"])
    @has_access
    def decide(self, pk):
        def work(i):
            decision = request.form.get("decision", "")
            judgements = inspections.parse_judgements(request.form) if decision == APPEAL_UPHELD else None
            inspections.decide(db.session, i, self._me(), decision, request.form.get("decision_note"),
                               judgements, utcnow())

        return self._run(pk, work, _l("Appeal decided: the inspection is final"))


def _highlight(text: str, spans: list[tuple[int, int, str]]) -> Markup:
    """`text` with the [start, end) spans wrapped in <mark class=…>, everything escaped."""
    out, pos = [], 0
    for start, end, css in sorted(spans):
        if start < pos:
            continue
        out.append(escape(text[pos:start]))
        out.append(Markup('<mark class="{}">{}</mark>').format(css, text[start:end]))
        pos = end
    out.append(escape(text[pos:]))
    return Markup("").join(out)


def machine_note(kind: str, result: dict, threshold) -> str:
    """The machine's finding for one item, in the user's language (the stored note is English)."""
    from flask_babel import gettext as _

    if kind == "manual":
        return _("Judged by the inspector")
    if not result.get("checked"):
        note = result.get("note") or ""
        if "no transcript" in note:
            return _("Not checked: the call has no transcript")
        if "no timings" in note:
            return _("Not checked: the transcript has no timings")
        return _("Not checked")
    # Rows written before the machine kept its details (e.g. the demo's) have only "passed": say what
    # is known rather than print an empty list or "None".
    passed = result.get("passed")
    limit = f"{threshold:g}" if threshold is not None else "—"
    if kind == CHECK_FORBIDDEN:
        words = ", ".join(result.get("hits") or [])
        if words:
            return _("Forbidden words: %(words)s", words=words)
        return _("No forbidden words") if passed is not False else _("Forbidden words were said")
    if kind == CHECK_REQUIRED:
        if passed:
            return _("All required words said")
        missing = ", ".join(result.get("missing") or [])
        return _("Required words missing: %(words)s", words=missing) if missing else \
            _("Some required words were not said")
    value = result.get("value")
    if kind == CHECK_SILENCE:
        if value is None:
            return _("Longest silence within the limit (%(limit)s s)", limit=limit) if passed else \
                _("Longest silence over the limit (%(limit)s s)", limit=limit)
        return _("Longest silence %(value)s s (limit %(limit)s s)", value=f"{value:g}", limit=limit)
    if value is None:
        return _("Agent speech rate within the limit (%(limit)s)", limit=limit) if passed else \
            _("Agent speech rate over the limit (%(limit)s)", limit=limit)
    return _("Agent speech rate %(value)s characters/min (limit %(limit)s)", value=f"{value:g}", limit=limit)


def inspection_page(item: QaInspection, sm) -> dict:
    """What the inspection page shows: the call, the transcript with the machine's hits, the results per
    item and the forms this user may use now."""
    viewer = current_viewer()
    call = item.call
    items = list(item.scorecard.items)
    machine = inspections.loads(item.machine_results)
    for result in machine.values():  # rows written without "checked" (e.g. the demo's) say it by "passed"
        if isinstance(result, dict):
            result.setdefault("checked", result.get("passed") is not None)
    judged = inspections.loads(item.item_results)
    segments = checks.parse_transcript(call.transcript) if call is not None else None
    marks: dict[int, list] = {}
    for it in items:
        css = {CHECK_FORBIDDEN: "qa-hit-forbidden", CHECK_REQUIRED: "qa-hit-required"}.get(it.kind)
        for index, spans in (machine.get(str(it.id), {}).get("spans") or {}).items():
            marks.setdefault(int(index), []).extend((s, e, css) for s, e in spans)
    transcript = [{"speaker": s.speaker or "agent", "start": s.start, "end": s.end,
                   "html": _highlight(s.text, marks.get(i, []))} for i, s in enumerate(segments or [])]
    me = viewer.employee_id
    can_write = sm.has_access("can_write", policy.QA_INSPECTION) and me != item.agent_id
    preset = {}
    for it in items:
        key = str(it.id)
        if key in judged:
            preset[it.id] = judged[key].get("passed")
        elif machine.get(key, {}).get("checked"):
            preset[it.id] = machine[key].get("passed")
    return {
        "item": item, "call": call, "items": items, "machine": machine, "judged": judged, "preset": preset,
        "transcript": transcript, "has_transcript": segments is not None,
        "callee": mask_phone(call.callee_phone) if call is not None else "",
        "recording": _safe_url(call.recording_url) if call is not None else None,
        "kind_labels": KIND_LABELS, "machine_note": machine_note,
        "status_labels": STATUS_LABELS,
        "decision_labels": DECISION_LABELS,
        "can_score": can_write and item.status in (QA_PENDING, QA_SCORED),
        "can_decide": can_write and item.status == QA_APPEALED,
        "can_appeal": (sm.has_access("can_appeal", policy.QA_INSPECTION) and me == item.agent_id
                       and item.status == QA_SCORED and item.appealed_at is None),
    }


def register(appbuilder) -> None:
    """Menu entries of call quality inspection (called from app.views.register_views)."""
    cat = "QA"
    appbuilder.add_view(QaInspectionView, "QA Workbench", icon="fa-check-square-o", label=_l("QA Workbench"),
                        category=cat, category_label=_l("Quality Inspection"), category_icon="fa-headphones")
    appbuilder.add_view(QaPlanView, "Sampling Plans", icon="fa-random", label=_l("Sampling Plans"),
                        category=cat)
    appbuilder.add_view(QaScorecardView, "Scorecards", icon="fa-list-ol", label=_l("Scorecards"),
                        category=cat)
    appbuilder.add_view(QaCheckItemView, "Check Items", icon="fa-check", label=_l("Check Items"),
                        category=cat)
