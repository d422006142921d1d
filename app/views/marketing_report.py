"""Marketing › Marketing Report (/marketing/report/) and GET /api/v1/marketing/report: leads, opportunities,
contacted, won, revenue, spend, cost per lead, cost per won and ROI per campaign and channel
(app.services.marketing_report). Lead counts link to the lead list filtered by campaign and period."""

from __future__ import annotations

import csv
import datetime as dt
import io

from flask import Response, current_app, flash, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.api import expose as api_expose
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l

from app import clock
from app.extensions import db
from app.security import policy
from app.security.scope import current_viewer
from app.services import audit, marketing_report, metadata
from app.services.errors import DomainError
from app.services.reference import MARKETING_CHANNEL
from app.views.uow import error_json


def _after(day: dt.date) -> str:
    """The last second before `day` (the list's "greater than" filter)."""
    return (dt.datetime.combine(day, dt.time(0)) - dt.timedelta(seconds=1)).isoformat(" ")


def _before(day: dt.date) -> str:
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0)).isoformat(" ")


def leads_link(f: marketing_report.ReportFilters, campaign_id: int) -> str:
    """The lead list of one campaign's leads created in the period (business-zone days)."""
    return url_for("LeadView.list", _flt_0_marketing_campaign=campaign_id,
                   _flt_1_created_at=_after(f.start), _flt_2_created_at=_before(f.end))


def report_link(f: marketing_report.ReportFilters, channel_id: int | None) -> str:
    return url_for("MarketingReportView.index", channel=channel_id, **{"from": f.start.isoformat(),
                                                                       "to": f.end.isoformat()})


def _chart(data: dict) -> dict:
    rows = data["campaigns"]
    chart = {"labels": [r["code"] for r in rows], "leads": [r["leads"] for r in rows],
             "opportunities": [r["opportunities"] for r in rows], "won": [r["won"] for r in rows]}
    if data["money_visible"]:
        chart.update(spend=[float(r["spend"]) for r in rows], revenue=[float(r["revenue"]) for r in rows])
    return chart


class MarketingReportView(BaseView):
    """Per campaign and channel over a period of business days; money only for viewers with scope all."""

    route_base = "/marketing/report"
    default_view = "index"
    class_permission_name = policy.MARKETING_REPORT
    method_permission_name = {"index": "read", "export": "export"}

    @staticmethod
    def _filters() -> marketing_report.ReportFilters:
        """The request's filters; a bad one is flashed and the defaults used."""
        today = clock.today()
        args = {k: v for k, v in request.args.items() if v != "" and k in marketing_report.ARGS}
        try:
            return marketing_report.parse_filters(db.session, args, today)
        except DomainError as exc:
            message = _l("A filter was not understood (%(field)s): the defaults are shown.", field=exc.field)
            flash(str(message), "warning")
            return marketing_report.parse_filters(db.session, {}, today)

    @expose("/export.csv")
    @has_access
    def export(self):
        """The per-campaign rows as CSV (UTF-8 with BOM, for Excel); audited."""
        f, viewer = self._filters(), current_viewer()
        data = marketing_report.report(db.session, viewer, f)
        columns = ["code", "name", "channel", *marketing_report.COUNTS]
        if data["money_visible"]:
            columns += ["revenue", "spend", "cost_per_lead", "cost_per_won", "roi"]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in data["campaigns"]:
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
        audit.record(db.session, "export", target_type=policy.MARKETING_REPORT,
                     summary=f"marketing report {f.start}..{f.end}: {len(data['campaigns'])} rows")
        db.session.commit()
        name = f"marketing-report-{f.start}-{f.end}.csv"
        return Response("\ufeff" + out.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": f"attachment; filename={name}"})

    @expose("/")
    @has_access
    def index(self):
        f = self._filters()
        viewer = current_viewer()
        data = marketing_report.report(db.session, viewer, f)
        can_read_leads = viewer.can(policy.READ, policy.LEAD)  # the drill-down's list
        return self.render_template(
            "marketing/report.html", data=data, f=f, chart=_chart(data),
            channels=metadata.dict_items(db.session, MARKETING_CHANNEL),
            leads_link=lambda campaign_id: leads_link(f, campaign_id) if can_read_leads else None,
            report_link=lambda channel_id: report_link(f, channel_id), title=_l("Marketing Report"),
            export_link=url_for("MarketingReportView.export", channel=f.channel_id,
                                **{"from": f.start.isoformat(), "to": f.end.isoformat()})
            if viewer.can(policy.EXPORT, policy.MARKETING_REPORT) else None)


class MarketingReportApi(BaseApi):
    """GET /api/v1/marketing/report: the marketing report as JSON (session or JWT)."""

    resource_name = "marketing"
    class_permission_name = policy.MARKETING_REPORT
    method_permission_name = {"report": "read"}
    allow_browser_login = True
    openapi_spec_tag = "Marketing"

    @api_expose("/report", methods=["GET"])
    @protect()
    @safe
    def report(self):
        """Leads, opportunities, contacted, won, revenue, spend, cost per lead, cost per won and ROI per
        campaign and per channel, for the caller's data scope.
        ---
        get:
          parameters:
          - in: query
            name: from
            description: First day of the period, business time zone (default 29 days before `to`)
            schema: {type: string, format: date}
          - in: query
            name: to
            description: Last day of the period (default today)
            schema: {type: string, format: date}
          - in: query
            name: channel
            description: A marketing channel (id of an item of the marketing_channel dictionary)
            schema: {type: integer, minimum: 1, maximum: 2147483647}
          responses:
            200:
              description: >-
                Rows per campaign (campaigns) and per channel (channels) and the totals. Counts cover the
                leads and opportunities created in the period that the caller may see. Money (revenue,
                spend, cost_per_lead, cost_per_won as decimal strings, roi as a ratio such as 0.2500) is
                null unless the data scope of the caller is all (money_visible); a ratio is null when its
                divisor is 0.
              content:
                application/json:
                  schema:
                    type: object
                    required: [filters, money_visible, campaigns, channels, totals]
                    properties:
                      filters: {type: object}
                      money_visible: {type: boolean}
                      campaigns: {type: array, items: {type: object}}
                      channels: {type: array, items: {type: object}}
                      totals: {type: object}
            400:
              description: A malformed, upside-down or too long period, or an unknown channel (message, field)
        """
        try:
            f = marketing_report.parse_filters(db.session, request.args, clock.today())
        except DomainError as exc:
            return error_json(exc)
        data = marketing_report.as_json(marketing_report.report(db.session, current_viewer(), f))
        return current_app.response_class(current_app.json.dumps(data), status=200,
                                          mimetype="application/json")


def register(appbuilder, category: str) -> None:
    appbuilder.add_view(MarketingReportView, "Marketing Report", icon="fa-line-chart",
                        label=_l("Marketing Report"), category=category)
    appbuilder.add_api(MarketingReportApi)
