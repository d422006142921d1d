"""Call and QA reports: per agent and team (calls, connect rate, talk time), per caller-ID number (today's
usage against its cap) and the QA score trend — tables, charts and a JSON variant (?format=json).

Thin views: the figures come from app.services.calls.reports and app.services.qa.reports, restricted to
the viewer's data scope there (the Viewer is passed in; no request state reaches the services).
"""

from __future__ import annotations

from flask import jsonify, request
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l

from app.clock import utcnow
from app.extensions import db
from app.models.calls import NUMBER_ACTIVE, NUMBER_FLAGGED, NUMBER_SUSPENDED
from app.security import policy
from app.security.scope import current_viewer
from app.services.calls import reports
from app.services.errors import DomainError
from app.services.qa import reports as qa_reports

QA_DEFAULT_DAYS = 28
NUMBER_STATUS_LABELS = {NUMBER_ACTIVE: _l("In use"), NUMBER_FLAGGED: _l("Flagged"),
                        NUMBER_SUSPENDED: _l("Suspended")}


def _wants_json() -> bool:
    return request.args.get("format") == "json" or request.accept_mimetypes.best == "application/json"


def _error(view: BaseView, template: str, exc: DomainError, **context):
    """A bad parameter: 400 with a JSON body, or the page with the message beside the form."""
    message = exc.message
    if _wants_json():
        return jsonify({"message": message, **({"field": exc.field} if exc.field else {})}), 400
    return view.render_template(template, error=message, error_field=exc.field, args=request.args,
                                **context), 400


class CallReportView(BaseView):
    route_base = "/calls/reports"
    class_permission_name = policy.CALL_REPORT
    method_permission_name = {"agents": "read", "numbers": "read"}
    default_view = "agents"

    @expose("/")
    @has_access
    def agents(self):
        """Per agent and per team for a range of business days (default: the last 7)."""
        session = db.session
        try:
            rng = reports.date_range(session, utcnow(), request.args.get("start"), request.args.get("end"))
            team = reports.int_param(request.args.get("team"), "team")
        except DomainError as exc:
            return _error(self, "call_reports/calls.html", exc, rng=None, agents=[], teams=[], days=[],
                          totals=reports.CallStats(None, ""), team=None, chart={})
        viewer = current_viewer()
        teams = reports.by_team(session, rng, viewer)
        agents = reports.by_agent(session, rng, viewer, org_unit_id=team)
        days = reports.daily(session, rng, viewer)
        totals = reports.totals(teams)
        if _wants_json():
            return jsonify({"range": rng.as_dict(), "team": team, "totals": totals.as_dict(),
                            "teams": [r.as_dict() for r in teams], "agents": [r.as_dict() for r in agents],
                            "daily": days})
        chart = {"agents": [r.as_dict() for r in agents[:25]], "teams": [r.as_dict() for r in teams],
                 "daily": days}
        return self.render_template("call_reports/calls.html", rng=rng, agents=agents, teams=teams,
                                    days=days, totals=totals, team=team, chart=chart, args=request.args,
                                    error=None, error_field=None)

    @expose("/numbers")
    @has_access
    def numbers(self):
        """Each caller-ID number's usage today against its daily cap; flagged and suspended ones listed."""
        session = db.session
        try:
            line = reports.int_param(request.args.get("line"), "line")
        except DomainError as exc:
            return _error(self, "call_reports/numbers.html", exc, rows=[], flagged=[], chart={},
                          status_labels=NUMBER_STATUS_LABELS)
        rows = reports.by_number(session, utcnow(), current_viewer(), line_id=line)
        flagged = [r for r in rows if r.status != NUMBER_ACTIVE]
        if _wants_json():
            return jsonify({"numbers": [r.as_dict() for r in rows],
                            "flagged": [r.as_dict() for r in flagged]})
        chart = {"numbers": [r.as_dict() for r in rows]}
        return self.render_template("call_reports/numbers.html", rows=rows, flagged=flagged, chart=chart,
                                    status_labels=NUMBER_STATUS_LABELS, args=request.args, error=None,
                                    error_field=None)


class QaReportView(BaseView):
    route_base = "/qa/reports"
    class_permission_name = policy.QA_REPORT
    method_permission_name = {"trend": "read"}
    default_view = "trend"

    @expose("/")
    @has_access
    def trend(self):
        """Average inspector score (the final one after an appeal) and machine score per day or week."""
        session = db.session
        try:
            rng = reports.date_range(session, utcnow(), request.args.get("start"), request.args.get("end"),
                                     default_days=QA_DEFAULT_DAYS)
            agent = reports.int_param(request.args.get("agent"), "agent")
            team = reports.int_param(request.args.get("team"), "team")
            group = request.args.get("group") or "day"
            viewer = current_viewer()
            points = qa_reports.score_trend(session, rng, viewer, group=group, agent_id=agent,
                                            org_unit_id=team)
            agents = qa_reports.by_agent(session, rng, viewer, org_unit_id=team)
        except DomainError as exc:
            return _error(self, "call_reports/qa.html", exc, rng=None, points=[], agents=[], teams=[],
                          totals=qa_reports.ScoreBucket(None), group="day", agent=None, team=None, chart={})
        teams = qa_reports.by_team(session, rng, viewer)
        totals = qa_reports.totals(points)
        if _wants_json():
            return jsonify({"range": rng.as_dict(), "group": group, "agent": agent, "team": team,
                            "totals": totals.as_dict(), "trend": [p.as_dict() for p in points],
                            "agents": [r.as_dict() for r in agents], "teams": [r.as_dict() for r in teams]})
        chart = {"trend": [p.as_dict() for p in points]}
        return self.render_template("call_reports/qa.html", rng=rng, points=points, agents=agents,
                                    teams=teams, totals=totals, group=group, agent=agent, team=team,
                                    chart=chart, args=request.args, error=None, error_field=None)


def register(appbuilder) -> None:
    view = appbuilder.add_view(CallReportView, "Call Reports", icon="fa-bar-chart",
                               label=_l("Call Reports"), category="Calls", category_label=_l("Calls"),
                               category_icon="fa-phone")
    # baseview: role sync grants this menu entry to whoever may read the call reports.
    appbuilder.add_link("Caller-ID Usage", href="/calls/reports/numbers", icon="fa-tachometer",
                        label=_l("Caller-ID Usage"), category="Calls", baseview=view)
    appbuilder.add_view(QaReportView, "QA Reports", icon="fa-line-chart", label=_l("QA Reports"),
                        category="QA", category_label=_l("Quality Inspection"),
                        category_icon="fa-check-square-o")
