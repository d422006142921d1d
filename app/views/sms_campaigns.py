"""SMS campaigns: create / edit (audience as a saved filter or an uploaded list), launch now or later,
pause / resume / cancel, and a live progress page (counts per outcome, rate, ETA, a chart, the job runs).

Each action parses its input, calls one service command (app.services.sms.campaigns /
campaign_audience) as one unit of work (app.views.uow) and redirects to the progress page."""

from __future__ import annotations

import datetime as dt

from flask import abort, g, jsonify, request, url_for
from flask_appbuilder import expose
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from werkzeug.routing import BuildError

from app import clock
from app.extensions import db
from app.models.sms import SmsAudienceEntry, SmsCampaign, SmsMessage
from app.security import policy
from app.services.errors import DomainError
from app.services.sms import campaign_audience, campaigns
from app.views import labels
from app.views.base import CrmModelView, refuse_delete_in_use
from app.views.uow import flash_result


def parse_launch_time(raw: str | None) -> dt.datetime | None:
    """The launch form's time: empty / "now" → None, else business-zone wall time → naive UTC."""
    raw = (raw or "").strip()
    if raw.lower() in ("", "now", "立即"):  # what the field's hint offers
        return None
    try:
        return clock.to_utc(dt.datetime.fromisoformat(raw))
    except ValueError:
        raise DomainError("Enter a date and time such as 2026-12-01 09:30", field="scheduled_at") from None


def run_link(run) -> str | None:
    """The Jobs page of a run, when the app has one."""
    try:
        return url_for("JobsView.show", pk=run.id)
    except BuildError:
        return None


class SmsCampaignView(CrmModelView):
    datamodel = SQLAInterface(SmsCampaign)
    class_permission_name = policy.SMS_CAMPAIGN
    method_permission_name = {**policy.METHOD_PERMISSIONS, "launch": "write", "pause": "write",
                              "resume": "write", "cancel": "write", "upload": "write", "progress": "read",
                              "progress_json": "read"}
    list_title = _l("SMS Campaigns")
    add_title, edit_title, show_title = _l("Add SMS campaign"), _l("Edit SMS campaign"), _l("SMS campaign")
    list_columns = ["name", "template", "status", "scheduled_at", "started_at", "finished_at"]
    show_columns = ["name", "template", "channel", "audience", "variables", "status", "scheduled_at",
                    "started_at", "finished_at", "cursor", "prepared", "created_by"]
    add_columns = edit_columns = ["name", "template", "channel", "audience", "variables"]
    label_columns = {"name": _l("Name"), "template": _l("Template"), "channel": _l("Channel"),
                     "audience": _l("Audience (JSON)"), "variables": _l("Variables (JSON)"),
                     "status": _l("Status"), "scheduled_at": _l("Scheduled at"),
                     "started_at": _l("Started at"), "finished_at": _l("Finished at"),
                     "cursor": _l("Audience read up to"), "prepared": _l("Audience prepared"),
                     "created_by": _l("Created by"), "created_at": _l("Created at"),
                     "updated_at": _l("Updated at")}
    formatters_columns = labels.formatters(status="sms_campaign.status")
    description_columns = {
        "audience": _l('{"kind": "filter", "product_line": "k12_math", "stage": "new", "region": "上海", '
                       '"consent": true} or {"kind": "upload"} (then upload the list)'),
        "variables": _l('Values of the template variables, e.g. {"course": "少儿编程"}; {name} comes from '
                        'the customer'),
    }
    show_template = "crm/sms_campaign_show.html"
    base_order = ("id", "desc")

    def check_item(self, item, creating):
        campaigns.check_draft(item, creating)

    def check_delete(self, item):
        refuse_delete_in_use(item, SmsMessage.campaign_id, instead="cancel it instead")

    def pre_delete(self, item):
        super().pre_delete(item)  # a draft's uploaded audience goes with it
        campaign_audience.drop_upload(db.session, item.id)

    def _campaign(self, pk) -> SmsCampaign:
        item = db.session.get(SmsCampaign, pk)
        if item is None:
            abort(404)
        return item

    def _act(self, pk, work, success):
        """Run `work()` as one unit of work; flash `success` or the refusal; back to the progress page."""
        return flash_result(work, back=url_for("SmsCampaignView.progress", pk=pk),
                            success=lambda result: success(result), labels=self.label_columns)

    @expose("/launch/<int:pk>", methods=["POST"])
    @has_access
    def launch(self, pk):
        item = self._campaign(pk)
        raw = request.form.get("scheduled_at")
        return self._act(pk, lambda: campaigns.launch(db.session, item, at=parse_launch_time(raw),
                                                      actor=g.user),
                         lambda _: _l("Campaign scheduled"))

    @expose("/pause/<int:pk>", methods=["POST"])
    @has_access
    def pause(self, pk):
        self._campaign(pk)
        return self._act(pk, lambda: campaigns.pause(db.session, pk), lambda _: _l("Campaign paused"))

    @expose("/resume/<int:pk>", methods=["POST"])
    @has_access
    def resume(self, pk):
        self._campaign(pk)
        return self._act(pk, lambda: campaigns.resume(db.session, pk, actor=g.user),
                         lambda _: _l("Campaign resumed"))

    @expose("/cancel/<int:pk>", methods=["POST"])
    @has_access
    def cancel(self, pk):
        self._campaign(pk)
        return self._act(pk, lambda: campaigns.cancel(db.session, pk, actor=g.user),
                         lambda n: _l("Campaign cancelled; %(n)s messages will not be sent", n=n))

    @expose("/upload/<int:pk>", methods=["POST"])
    @has_access
    def upload(self, pk):
        """The audience list: one phone per line, or CSV with phone[,name] (a header line is skipped)."""
        self._campaign(pk)
        f = request.files.get("file")
        stream = f.stream if f is not None and f.filename else None
        return self._act(pk, lambda: campaign_audience.store_upload(db.session, pk, stream),
                         lambda n: _l("%(n)s lines uploaded", n=n))

    @expose("/progress/<int:pk>")
    @has_access
    def progress(self, pk):
        item = self._campaign(pk)
        uploaded = db.session.scalar(select(func.count()).select_from(SmsAudienceEntry)
                                     .where(SmsAudienceEntry.campaign_id == pk))
        return self.render_template("crm/sms_campaign.html", item=item, uploaded=uploaded,
                                    data=campaigns.progress(db.session, pk),
                                    runs=campaigns.runs_of(db.session, pk), run_link=run_link,
                                    count_labels=labels.sms_count_labels(),
                                    status_labels={c: str(n) for c, n in
                                                   labels.choices("sms_campaign.status")})

    @expose("/progress/<int:pk>.json")
    @has_access
    def progress_json(self, pk):
        self._campaign(pk)
        return jsonify(campaigns.progress(db.session, pk))
