"""SMS campaigns: create / edit (the audience: a segment, with its live count, or an uploaded list), launch
now or later, pause / resume / cancel, and a live progress page (the audience's snapshot, counts per outcome,
rate, ETA, a chart, the job runs); and the campaigns' REST API (drafts: create, edit, read, delete).

Each action parses its input, calls one service command (app.services.sms.campaigns /
campaign_audience) as one unit of work (app.views.uow) and redirects to the progress page."""

from __future__ import annotations

import datetime as dt

from flask import abort, g, jsonify, request, url_for
from flask_appbuilder import expose
from flask_appbuilder.fieldwidgets import Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from marshmallow import fields
from sqlalchemy import func, select
from werkzeug.routing import BuildError
from wtforms import SelectField

from app import clock
from app.extensions import db
from app.models.bigdata import Segment
from app.models.sms import SmsAudienceEntry, SmsCampaign, SmsMessage
from app.security import input_guards, policy
from app.services.errors import DomainError
from app.services.sms import campaign_audience, campaign_segment, campaigns
from app.views import labels
from app.views import sms_campaign_audience as audience_view
from app.views.api_schema import CrmModel2SchemaConverter
from app.views.base import CrmModelRestApi, CrmModelView, refuse_delete_in_use
from app.views.uow import flash_result

AUDIENCE_KINDS = [("", "—"), (campaign_audience.SEGMENT, _l("A segment")),
                  (campaign_audience.UPLOAD, _l("An uploaded list (upload it on the campaign's page)"))]
LABELS = {"name": _l("Name"), "template": _l("Template"), "channel": _l("Channel"),
          "audience_kind": _l("Audience"), "segment": _l("Segment"), "segment_id": _l("Segment"),
          "audience": _l("Audience"), "variables": _l("Variables (JSON)"),
          "status": _l("Status"), "scheduled_at": _l("Scheduled at"),
          "started_at": _l("Started at"), "finished_at": _l("Finished at"),
          "cursor": _l("Audience read up to"), "prepared": _l("Audience prepared"),
          "created_by": _l("Created by"), "created_at": _l("Created at"),
          "updated_at": _l("Updated at")}
VARIABLES_HINT = _l('Values of the template variables, e.g. {"course": "少儿编程"}; {name} comes from '
                    'the customer')


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
                              "progress_json": "read", "segment_count": "write"}
    list_title = _l("SMS Campaigns")
    add_title, edit_title, show_title = _l("Add SMS campaign"), _l("Edit SMS campaign"), _l("SMS campaign")
    list_columns = ["name", "template", "status", "scheduled_at", "started_at", "finished_at"]
    show_columns = ["name", "template", "channel", "segment", "variables", "status",
                    "scheduled_at", "started_at", "finished_at", "cursor", "prepared", "created_by"]
    add_columns = edit_columns = ["name", "template", "channel", "audience_kind", "segment", "variables"]
    add_form_extra_fields = edit_form_extra_fields = {
        "audience_kind": SelectField(_l("Audience"), choices=AUDIENCE_KINDS,
                                     default=campaign_audience.SEGMENT, widget=Select2Widget())}
    label_columns = LABELS
    formatters_columns = labels.formatters(status="sms_campaign.status")
    description_columns = {
        "segment": _l("The customers of the segment when the campaign starts are copied and messaged"),
        "variables": VARIABLES_HINT,
    }
    add_template = "crm/sms_campaign_add.html"
    edit_template = "crm/sms_campaign_edit.html"
    show_template = "crm/sms_campaign_show.html"
    base_order = ("id", "desc")

    def check_item(self, item, creating):
        campaigns.check_draft(db.session, item, creating, kind=getattr(item, "audience_kind", None) or "",
                              segment=item.segment, segment_field="segment")

    def prefill_form(self, form, pk):
        super().prefill_form(form, pk)
        item = db.session.get(SmsCampaign, pk)
        kind = campaign_audience.kind_of(item) if item is not None else None
        chosen = kind in (campaign_audience.SEGMENT, campaign_audience.UPLOAD)
        form.audience_kind.data = kind if chosen else ""

    def audience_summary(self, pk) -> dict:
        """The audience block of the campaign's detail page (crm/sms_campaign_show.html)."""
        return audience_view.summary(db.session, self._campaign(pk))

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
                                    audience=audience_view.summary(db.session, item),
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

    @expose("/segment_count/<int:segment_id>")
    @has_access
    def segment_count(self, segment_id):
        """The form's "≈ N recipients": how many customers the segment reaches now."""
        segment = db.session.get(Segment, segment_id) if input_guards.storable_id(segment_id) else None
        if segment is None:
            abort(404)
        return jsonify({"segment_id": segment.id,
                        "count": campaign_segment.recipient_count(db.session, segment)})


class _SegmentIdConverter(CrmModel2SchemaConverter):
    """The API takes the segment as `segment_id` (an integer or null): marshmallow-sqlalchemy's schemas
    leave foreign-key columns out, so it is declared here."""

    def _meta_schema_factory(self, columns, model, class_mixin, parent_schema_name=None):
        schema = super()._meta_schema_factory(columns, model, class_mixin, parent_schema_name)
        if "segment_id" in columns and "segment_id" not in schema._declared_fields:
            schema._declared_fields["segment_id"] = fields.Integer(allow_none=True, strict=True)
        return schema


class SmsCampaignApi(CrmModelRestApi):
    """Campaign drafts by API. The audience is a segment (`segment_id`) or, without one, a list uploaded on
    the campaign's page; `audience` is the system's read-only description (with the snapshot's criteria,
    count and time once the campaign has started). Launch, pause and the rest stay on the console."""

    datamodel = SQLAInterface(SmsCampaign)
    model2schemaconverter = _SegmentIdConverter
    resource_name = "sms_campaign"
    class_permission_name = policy.SMS_CAMPAIGN
    list_columns = show_columns = ["id", "name", "template.id", "channel.id", "segment_id", "audience",
                                   "variables", "status", "scheduled_at", "started_at", "finished_at",
                                   "prepared", "created_by"]
    add_columns = edit_columns = ["name", "template", "channel", "segment_id", "variables"]
    label_columns = LABELS
    description_columns = {
        "segment_id": _l("The audience segment; leave it out (or null) to upload a list on the campaign's "
                         "page"),
        "variables": VARIABLES_HINT}
    base_order = ("id", "desc")

    def check_item(self, item, creating):
        segment = None
        if item.segment_id is not None:
            if input_guards.storable_id(item.segment_id):
                segment = db.session.get(Segment, item.segment_id)
            if segment is None:
                raise DomainError("No segment has this id", field="segment_id", status=422)
        campaigns.check_draft(db.session, item, creating, kind=None, segment=segment,
                              segment_field="segment_id")

    def pre_add(self, item):
        super().pre_add(item)
        item.created_by = getattr(g.user, "username", None)

    def check_delete(self, item):
        refuse_delete_in_use(item, SmsMessage.campaign_id, instead="cancel it instead")

    def pre_delete(self, item):
        super().pre_delete(item)
        campaign_audience.drop_upload(db.session, item.id)
