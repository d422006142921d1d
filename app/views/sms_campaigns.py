"""SMS campaigns: create / edit (audience as a saved filter or an uploaded list), launch now or later,
pause / resume / cancel, and a live progress page (counts per outcome, rate, ETA, a chart)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

from flask import abort, flash, jsonify, redirect, request, url_for
from flask_appbuilder import expose
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, func, insert, select

from app import clock
from app.extensions import db
from app.jobs import sms as jobs
from app.models.sms import SmsAudienceEntry, SmsCampaign, SmsMessage
from app.security import policy
from app.services.errors import DomainError
from app.services.sms import campaigns
from app.views.base import CrmModelView, refuse_delete_in_use

UPLOAD_CHUNK = 5000


def check_campaign_item(item: SmsCampaign, creating: bool) -> None:
    if not (item.name or "").strip():
        raise DomainError("Enter a name", field="name")
    if item.status not in (None, "draft") and not creating:
        raise DomainError("Only a draft campaign can be edited", field="name")
    item.audience = (item.audience or "").strip() or '{"kind": "upload"}'
    campaigns.audience_of(item)
    campaigns._defaults(item)


class SmsCampaignView(CrmModelView):
    datamodel = SQLAInterface(SmsCampaign)
    class_permission_name = policy.SMS_CAMPAIGN
    method_permission_name = {**policy.METHOD_PERMISSIONS, "launch": "write", "pause": "write",
                              "resume": "write", "cancel": "write", "upload": "write", "progress": "read",
                              "progress_json": "read"}
    list_title = _l("SMS Campaigns")
    list_columns = ["name", "template", "status", "scheduled_at", "started_at", "finished_at"]
    show_columns = ["name", "template", "channel", "audience", "variables", "status", "scheduled_at",
                    "started_at", "finished_at", "cursor", "prepared", "created_by"]
    add_columns = edit_columns = ["name", "template", "channel", "audience", "variables"]
    label_columns = {"name": _l("Name"), "template": _l("Template"), "channel": _l("Channel"),
                     "audience": _l("Audience (JSON)"), "variables": _l("Variables (JSON)"),
                     "status": _l("Status"), "scheduled_at": _l("Scheduled at (UTC)"),
                     "started_at": _l("Started at"), "finished_at": _l("Finished at")}
    description_columns = {
        "audience": _l('{"kind": "filter", "product_line": "k12_math", "stage": "new", "region": "上海", '
                       '"consent": true} or {"kind": "upload"} (then upload the list)'),
        "variables": _l('Values of the template variables, e.g. {"course": "少儿编程"}; {name} comes from '
                        'the customer'),
    }
    show_template = "crm/sms_campaign_show.html"
    base_order = ("id", "desc")

    def check_item(self, item, creating):
        check_campaign_item(item, creating)

    def check_delete(self, item):
        refuse_delete_in_use(item, SmsMessage.campaign_id, instead="cancel it instead")

    def pre_delete(self, item):
        super().pre_delete(item)  # a draft's uploaded audience goes with it
        db.session.execute(delete(SmsAudienceEntry).where(SmsAudienceEntry.campaign_id == item.id))

    def _campaign(self, pk) -> SmsCampaign:
        item = db.session.get(SmsCampaign, pk)
        if item is None:
            abort(404)
        return item

    def _done(self, pk, message=None, error: DomainError | None = None):
        if error is not None:
            db.session.rollback()
            flash(error.message, "danger")
        else:
            db.session.commit()
            if message:
                flash(message, "success")
        return redirect(url_for("SmsCampaignView.progress", pk=pk))

    @expose("/launch/<int:pk>", methods=["POST"])
    @has_access
    def launch(self, pk):
        item = self._campaign(pk)
        at = None
        raw = (request.form.get("scheduled_at") or "").strip()
        if raw.lower() in ("now", "立即"):  # what the field's hint offers
            raw = ""
        try:
            if raw:
                try:
                    local = dt.datetime.fromisoformat(raw)
                except ValueError:
                    raise DomainError("Enter a date and time such as 2026-12-01 09:30",
                                      field="scheduled_at") from None
                at = clock.to_utc(local)
            campaigns.launch(db.session, item, at=at)
            item.created_by = item.created_by or getattr(getattr(self.appbuilder.sm, "current_user", None),
                                                         "username", None)
            db.session.commit()
        except DomainError as exc:
            return self._done(pk, error=exc)
        jobs.enqueue_prepare(pk, at=at)
        return self._done(pk, str(_l("Campaign scheduled")))

    @expose("/pause/<int:pk>", methods=["POST"])
    @has_access
    def pause(self, pk):
        try:
            campaigns.pause(db.session, pk)
        except DomainError as exc:
            return self._done(pk, error=exc)
        return self._done(pk, str(_l("Campaign paused")))

    @expose("/resume/<int:pk>", methods=["POST"])
    @has_access
    def resume(self, pk):
        try:
            campaigns.resume(db.session, pk)
            db.session.commit()
        except DomainError as exc:
            return self._done(pk, error=exc)
        jobs.resume_campaign(pk)
        return self._done(pk, str(_l("Campaign resumed")))

    @expose("/cancel/<int:pk>", methods=["POST"])
    @has_access
    def cancel(self, pk):
        try:
            n = campaigns.cancel(db.session, pk)
        except DomainError as exc:
            return self._done(pk, error=exc)
        return self._done(pk, str(_l("Campaign cancelled; %(n)s messages will not be sent", n=n)))

    @expose("/upload/<int:pk>", methods=["POST"])
    @has_access
    def upload(self, pk):
        """The audience list: one phone per line, or CSV with phone[,name] (a header line is skipped)."""
        item = self._campaign(pk)
        try:
            if item.status != "draft":
                raise DomainError("The list of a launched campaign cannot change", field="file")
            f = request.files.get("file")
            if f is None or not f.filename:
                raise DomainError("Choose a file", field="file")
            text = io.TextIOWrapper(f.stream, encoding="utf-8-sig", errors="replace")
            db.session.execute(delete(SmsAudienceEntry).where(SmsAudienceEntry.campaign_id == pk))
            line, batch = 0, []
            for row in csv.reader(text):
                if not row or not row[0].strip():
                    continue
                if line == 0 and not any(c.isdigit() for c in row[0]):
                    continue  # header
                line += 1
                batch.append({"campaign_id": pk, "line": line, "phone": row[0].strip()[:40],
                              "name": (row[1].strip()[:64] if len(row) > 1 and row[1].strip() else None)})
                if len(batch) >= UPLOAD_CHUNK:
                    db.session.execute(insert(SmsAudienceEntry), batch)
                    batch = []
            if batch:
                db.session.execute(insert(SmsAudienceEntry), batch)
            if not line:
                raise DomainError("The file holds no phone numbers", field="file")
            item.audience = json.dumps({"kind": "upload"})
        except DomainError as exc:
            return self._done(pk, error=exc)
        return self._done(pk, str(_l("%(n)s lines uploaded", n=line)))

    @expose("/progress/<int:pk>")
    @has_access
    def progress(self, pk):
        item = self._campaign(pk)
        uploaded = db.session.scalar(select(func.count()).select_from(SmsAudienceEntry)
                                     .where(SmsAudienceEntry.campaign_id == pk))
        return self.render_template("crm/sms_campaign.html", item=item, uploaded=uploaded,
                                    data=campaigns.progress(db.session, pk))

    @expose("/progress/<int:pk>.json")
    @has_access
    def progress_json(self, pk):
        self._campaign(pk)
        return jsonify(campaigns.progress(db.session, pk))
