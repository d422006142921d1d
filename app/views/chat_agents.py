"""Chats on the agents' side: Marketing › Chats (the list in the viewer's data scope, a chat's page with
its transcript, a reply form and a close button) and the transcript panel of the opportunity page.

A chat is seen through its opportunity (ChatSession.__scope_via__); one not yet linked to a lead only by
roles that see everything. Phone numbers written in messages show masked.
"""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import expose
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l

from app.extensions import db
from app.models.marketing import AGENT, BOT, CHAT_CLOSED, CHAT_OPEN, VISITOR, ChatSession
from app.security import policy
from app.security.scope import current_viewer
from app.services import chat, chat_bot
from app.views import panels
from app.views.base import CrmModelView
from app.views.sales import NO_CRUD, NO_CRUD_PERMISSIONS, PageShowMixin, opportunity_label
from app.views.uow import flash_error, run

STATUS_LABELS = {CHAT_OPEN: _l("Ongoing"), CHAT_CLOSED: _l("Ended")}
SENDER_LABELS = {VISITOR: _l("Visitor"), BOT: _l("Auto-reply"), AGENT: _l("Agent")}


def sender_label(message) -> str:
    if message.sender == AGENT and message.employee is not None:
        return message.employee.name
    return str(SENDER_LABELS.get(message.sender, message.sender))


def transcript_helpers() -> dict:
    """What the transcript partial (chat/_messages.html) needs besides the messages."""
    return {"chat_body": chat_bot.mask_phones, "chat_sender": sender_label,
            "chat_status": lambda s: STATUS_LABELS.get(s, s)}


def _lead_name(lead) -> str:
    return "" if lead is None else (lead.name or f"#{lead.id}")  # never Lead.__str__: it holds the phone


class ChatView(PageShowMixin, CrmModelView):
    """Marketing › Chats: the visitors' chats the viewer may see; a chat's page answers the visitor."""

    route_base = "/chats"
    datamodel = SQLAInterface(ChatSession)
    class_permission_name = policy.CHAT
    base_permissions = [policy.READ, policy.WRITE]
    exclude_route_methods = NO_CRUD
    method_permission_name = {**policy.METHOD_PERMISSIONS, **NO_CRUD_PERMISSIONS,
                              "reply": "write", "close": "write"}
    list_title = show_title = _l("Chats")
    add_title, edit_title = _l("Add Chat"), _l("Edit Chat")
    show_template = "chat/show.html"
    list_columns = ["id", "started_at", "last_message_at", "status", "landing_page", "campaign", "lead",
                    "opportunity"]
    show_columns = list_columns
    search_columns = ["status", "started_at", "last_message_at", "campaign", "landing_page"]
    order_columns = ["id", "started_at", "last_message_at"]
    base_order = ("last_message_at", "desc")
    formatters_columns = {"lead": _lead_name, "opportunity": opportunity_label,
                          "status": lambda v: STATUS_LABELS.get(v, v)}
    label_columns = {"id": _l("No."), "started_at": _l("Started at"), "last_message_at": _l("Last message"),
                     "status": _l("Status"), "landing_page": _l("Landing page"), "campaign": _l("Campaign"),
                     "lead": _l("Lead"), "opportunity": _l("Opportunity")}

    def page_context(self, item) -> dict:
        if item is None:
            return {}
        return {"chat": item, "messages": chat.transcript(db.session, item.id), "lead_name": _lead_name,
                "opportunity_label": opportunity_label, "max_body": chat.MAX_BODY, **transcript_helpers()}

    def _back(self, pk: int):
        return redirect(url_for("ChatView.show", pk=pk))

    @expose("/reply/<int:pk>", methods=["POST"])
    @has_access
    def reply(self, pk: int):
        """An agent's answer, shown to the visitor at the widget's next poll."""
        outcome = run(chat.agent_reply, db.session, pk, current_viewer(), request.form.get("body"))
        if outcome.error is not None:
            if outcome.error.status == 404:
                abort(404)
            flash_error(outcome.error, {"body": _l("Reply")})
        else:
            flash(str(_l("Reply sent")), "success")
        return self._back(pk)

    @expose("/close/<int:pk>", methods=["POST"])
    @has_access
    def close(self, pk: int):
        outcome = run(chat.close, db.session, pk, current_viewer())
        if outcome.error is not None:
            abort(404)
        flash(str(_l("Chat closed")), "success")
        return self._back(pk)


def transcript_panel(opportunity) -> dict:
    """The opportunity page's panel: every chat of the opportunity with its messages."""
    return {"chats": chat.of_opportunity(db.session, opportunity.id),
            "can_reply": current_app.appbuilder.sm.has_access(policy.WRITE, policy.CHAT),
            **transcript_helpers()}


def register(appbuilder) -> None:
    appbuilder.add_view(ChatView, "Chats", icon="fa-comments-o", label=_l("Chats"), category="Marketing",
                        category_label=_l("Marketing"))
    panels.add(panels.OPPORTUNITY, "chat/_transcript_panel.html", transcript_panel,
               permission=(policy.READ, policy.CHAT))
