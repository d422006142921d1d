"""The notification centre on screen: the bell with the unread count in the navbar of every page
(templates crm/base.html, crm/navbar.html), the list page /inbox/, and GET /api/v1/inbox/ with its
mark-read POSTs. A user sees and marks only their own notifications (app.services.inbox)."""

from __future__ import annotations

from flask import abort, current_app, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.api import expose as api_expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from app import clock
from app.extensions import db
from app.models.inbox import (
    FOLLOW_UP_DUE,
    JOB_FAILED,
    JOB_FINISHED,
    NEW_ASSIGNMENT,
    ORDER_APPROVAL,
    ORDER_PAID,
    RECYCLE_REMINDER,
    RESIGNATION_TRANSFER,
    InboxNotification,
)
from app.security import policy
from app.services import inbox
from app.services.errors import DomainError
from app.views import uow

PAGE_SIZE = 50
MAX_PAGE = 100_000  # beyond this a page number is noise (and an offset PostgreSQL would refuse)
API_MAX_PAGE_SIZE = 100
KIND_LABELS = {RECYCLE_REMINDER: _l("Recycle reminder"), FOLLOW_UP_DUE: _l("Follow-up due"),
               NEW_ASSIGNMENT: _l("New assignment"), JOB_FINISHED: _l("Job finished"),
               JOB_FAILED: _l("Job failed"), RESIGNATION_TRANSFER: _l("Resignation transfer"),
               ORDER_APPROVAL: _l("Order approval"), ORDER_PAID: _l("Order paid")}
#: subject_type → endpoint of its page (pk = subject_id)
SUBJECTS = {"opportunity": "OpportunityView.show", "job_run": "JobsView.show"}


def _me() -> int | None:
    return getattr(getattr(g, "user", None), "id", None)


def title(notification: InboxNotification) -> str:
    """The title in the reader's language (a parameter {"msgid": …} is translated as well)."""
    params = {k: gettext(v["msgid"]) if isinstance(v, dict) and "msgid" in v else v
              for k, v in notification.param_values.items()}
    try:
        return gettext(notification.msgid, **params)
    except (KeyError, ValueError, TypeError):  # parameters that do not fit the msgid: show it bare
        return gettext(notification.msgid)


def link(notification: InboxNotification) -> str | None:
    """Where the notification leads: its subject's page, or the workbench's "about to be recycled"."""
    if notification.kind == RECYCLE_REMINDER:
        endpoint, values = "WorkbenchView.index", {"f": "recycle_soon"}
    elif notification.subject_type in SUBJECTS and notification.subject_id is not None:
        endpoint, values = SUBJECTS[notification.subject_type], {"pk": notification.subject_id}
    else:
        return None
    return url_for(endpoint, **values) if endpoint in current_app.view_functions else None


def unread_for_bell() -> int | None:
    """The bell's count for the signed-in user (None: no bell), once per request."""
    if not current_user.is_authenticated:
        return None
    if "_crm_inbox_unread" not in g:
        allowed = current_app.appbuilder.sm.has_access(policy.READ, policy.INBOX)
        g._crm_inbox_unread = inbox.unread_count(db.session, _me()) if allowed else None
    return g._crm_inbox_unread


def as_dict(notification: InboxNotification) -> dict:
    return {"id": notification.id, "kind": notification.kind, "title": title(notification),
            "link": link(notification), "subject_type": notification.subject_type,
            "subject_id": notification.subject_id, "created_at": clock.isoformat(notification.created_at),
            "read_at": clock.isoformat(notification.read_at), "read": notification.read_at is not None}


class InboxView(BaseView):
    route_base = "/inbox"
    default_view = "list"
    class_permission_name = policy.INBOX
    method_permission_name = {"list": "read", "read": "write", "read_all": "write"}
    base_permissions = [policy.READ, policy.WRITE]

    @expose("/")
    @has_access
    def list(self):
        page = min(MAX_PAGE, max(0, request.args.get("page", 0, type=int)))
        unread_only = request.args.get("unread") == "1"
        rows, total = inbox.listing(db.session, _me(), page=page, page_size=PAGE_SIZE,
                                    unread_only=unread_only)
        return self.render_template("inbox/list.html", rows=rows, total=total, page=page,
                                    pages=(total + PAGE_SIZE - 1) // PAGE_SIZE, unread_only=unread_only,
                                    title_of=title, link_of=link, kind_labels=KIND_LABELS,
                                    unread=inbox.unread_count(db.session, _me()), title=_l("Notifications"))

    def _back(self) -> str:
        return url_for(".list", page=request.form.get("page", 0, type=int) or None,
                       unread="1" if request.form.get("unread") == "1" else None)

    @expose("/read/<int:pk>", methods=["POST"])
    @has_access
    def read(self, pk):
        outcome = uow.run(inbox.mark_read, db.session, _me(), pk)
        if outcome.error is not None:
            abort(404)
        return redirect(self._back())

    @expose("/read_all", methods=["POST"])
    @has_access
    def read_all(self):
        return uow.flash_result(lambda: inbox.mark_all_read(db.session, _me()), back=self._back(),
                                success=lambda n: _l("%(n)d notifications marked as read", n=n))


class InboxApi(BaseApi):
    """GET /api/v1/inbox/ (the signed-in user's notifications and unread count), and marking them read."""

    resource_name = "inbox"
    class_permission_name = policy.INBOX
    method_permission_name = {"get_list": "read", "read": "write", "read_all": "write"}
    allow_browser_login = True  # the page's script calls it with the session (and the CSRF header)
    openapi_spec_tag = "Inbox"

    def _int_arg(self, name: str, default: int, low: int, high: int) -> int:
        raw = request.args.get(name)
        if raw is None or raw == "":
            return default
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not low <= int(raw) <= high:
            raise DomainError("%(name)s must be a whole number from %(low)d to %(high)d", field=name,
                                  status=400, name=name, low=low, high=high)
        return int(raw)

    @api_expose("/", methods=["GET"])
    @protect()
    @safe
    def get_list(self):
        """Your notifications, newest first, and how many are unread.
        ---
        get:
          parameters:
          - in: query
            name: page
            schema: {type: integer, minimum: 0, maximum: 100000}
          - in: query
            name: page_size
            schema: {type: integer, minimum: 1, maximum: 100}
          - in: query
            name: unread
            description: 1 for the unread ones only
            schema: {type: integer, enum: [0, 1]}
          responses:
            200:
              description: The page of notifications, their total count and the unread count
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      count: {type: integer}
                      unread: {type: integer}
                      page: {type: integer}
                      page_size: {type: integer}
                      result:
                        type: array
                        items:
                          type: object
                          properties:
                            id: {type: integer}
                            kind: {type: string}
                            title: {type: string}
                            link: {type: string, nullable: true}
                            subject_type: {type: string, nullable: true}
                            subject_id: {type: integer, nullable: true}
                            created_at: {type: string, format: date-time}
                            read_at: {type: string, format: date-time, nullable: true}
                            read: {type: boolean}
            400:
              description: A query argument out of range (message, field)
            401:
              description: Not signed in
            403:
              description: No access to the inbox
        """
        try:
            page = self._int_arg("page", 0, 0, MAX_PAGE)
            size = self._int_arg("page_size", 20, 1, API_MAX_PAGE_SIZE)
            unread_only = self._int_arg("unread", 0, 0, 1) == 1
        except DomainError as exc:
            return uow.error_json(exc)
        rows, total = inbox.listing(db.session, _me(), page=page, page_size=size, unread_only=unread_only)
        return self.response(200, count=total, unread=inbox.unread_count(db.session, _me()), page=page,
                             page_size=size, result=[as_dict(r) for r in rows])

    @api_expose("/<int:pk>/read", methods=["POST"])
    @protect()
    @safe
    def read(self, pk):
        """Mark one of your notifications as read.
        ---
        post:
          responses:
            200:
              description: Marked read (or it was already); the notification and the unread count
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      read_at: {type: string, format: date-time}
                      unread: {type: integer}
        """
        outcome = uow.run(inbox.mark_read, db.session, _me(), pk)
        if outcome.error is not None:
            return uow.error_json(outcome.error)
        return self.response(200, id=outcome.result.id, read_at=clock.isoformat(outcome.result.read_at),
                             unread=inbox.unread_count(db.session, _me()))

    @api_expose("/read_all", methods=["POST"])
    @protect()
    @safe
    def read_all(self):
        """Mark all your notifications as read.
        ---
        post:
          responses:
            200:
              description: How many were marked read
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      marked: {type: integer}
                      unread: {type: integer}
        """
        outcome = uow.run(inbox.mark_all_read, db.session, _me())
        return self.response(200, marked=outcome.result, unread=inbox.unread_count(db.session, _me()))


def register(appbuilder) -> None:
    """The list page (reached from the bell, not the menu), the API, and the bell's count in templates."""
    appbuilder.add_view_no_menu(InboxView)
    appbuilder.add_api(InboxApi)
    current_app.jinja_env.globals["inbox_unread"] = unread_for_bell  # (called inside create_app)
