"""SMS reports (per campaign, per channel, failures by reason, with charts) and the failed notifications."""

from __future__ import annotations

import datetime as dt

from flask import abort, g, request
from flask_appbuilder import BaseView, expose
from flask_appbuilder.models.sqla.filters import FilterEqual
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l

from app import clock
from app.extensions import db
from app.models.sms import MSG_FAILED, NOTIFICATION, SmsCampaign, SmsMessage
from app.security import policy
from app.services.sms import reports
from app.views.base import CrmModelView

DEFAULT_DAYS = 30
MAX_DAYS = 36_500


def _since() -> tuple[dt.datetime | None, int | None]:
    """The report window from ?days=N (default 30; 0 = everything)."""
    try:
        days = int(request.args.get("days", DEFAULT_DAYS))
    except ValueError:
        days = DEFAULT_DAYS
    if days <= 0 or days > MAX_DAYS:  # beyond a century: everything (and no date out of range)
        return None, 0
    return clock.utcnow() - dt.timedelta(days=days), days


class SmsReportView(BaseView):
    route_base = "/sms/reports"
    class_permission_name = policy.SMS_REPORT
    method_permission_name = {"overview": "read", "campaign": "read"}
    default_view = "overview"

    @expose("/")
    @has_access
    def overview(self):
        since, days = _since()
        campaigns = reports.by_campaign(db.session, since=since)
        channels = reports.by_channel(db.session, since=since)
        reasons = reports.failure_reasons(db.session, since=since)
        return self.render_template(
            "crm/sms_report.html", campaigns=campaigns, channels=channels, reasons=reasons, days=days,
            totals=reports.totals(channels), campaign=None,
            chart={"campaigns": [c.as_dict() for c in campaigns[:20]],
                   "channels": [c.as_dict() for c in channels], "reasons": reasons[:12]})

    @expose("/campaign/<int:pk>")
    @has_access
    def campaign(self, pk: int):
        campaign = db.session.get(SmsCampaign, pk)
        if campaign is None:
            abort(404)
        rows = reports.by_campaign(db.session, campaign_id=pk)
        row = rows[0] if rows else reports.ReportRow(pk, campaign.name)
        reasons = reports.failure_reasons(db.session, campaign_id=pk)
        return self.render_template(
            "crm/sms_report.html", campaigns=[row], channels=[], reasons=reasons, days=None,
            totals=row, campaign=campaign,
            chart={"campaigns": [row.as_dict()], "channels": [], "reasons": reasons[:12]})


def _channels_tried(message_id: int) -> str:
    """The channels a failed notification went through, in fallback order (e.g. "主通道 → 备用通道")."""
    from app.services.sms.notification_sending import channels_tried

    orders = g.setdefault("sms_fallback_orders", {})  # one fallback order per template per request
    return " → ".join(c.name for c in channels_tried(db.session, message_id, orders))


def _channel_name(channel_id: int) -> str:
    from app.models.sms import SmsChannel

    channel = db.session.get(SmsChannel, channel_id)
    return channel.name if channel is not None else f"#{channel_id}"


class FailedNotificationView(CrmModelView):
    """Notifications that could not be sent: error code, attempts, and every channel tried (fallback)."""

    datamodel = SQLAInterface(SmsMessage)
    class_permission_name = policy.SMS_REPORT
    base_permissions = ["can_read"]
    base_filters = [["kind", FilterEqual, NOTIFICATION], ["status", FilterEqual, MSG_FAILED]]
    list_title = show_title = _l("Failed Notifications")
    add_title, edit_title = _l("Add SMS Message"), _l("Edit SMS Message")
    # "id" is shown as the channels tried (a formatter sees only its column's value: the message id).
    list_columns = ["created_at", "event", "phone", "error_code", "attempts", "channel_id", "id", "event_key"]
    show_columns = list_columns + ["uid", "content", "provider_id", "sent_at"]
    search_columns = ["event", "error_code", "created_at"]
    order_columns = ["created_at", "event", "error_code", "attempts"]
    base_order = ("created_at", "desc")
    phone_columns = ("phone",)
    formatters_columns = {"id": _channels_tried, "channel_id": _channel_name}
    label_columns = {
        "created_at": _l("Created at"), "event": _l("Event"), "phone": _l("Phone"),
        "error_code": _l("Error code"), "attempts": _l("Attempts"), "channel_id": _l("Last channel"),
        "id": _l("Channels tried"),
        "event_key": _l("Event key"), "uid": _l("Message id"), "content": _l("Content"),
        "provider_id": _l("Provider id"), "sent_at": _l("Sent at"),
    }
