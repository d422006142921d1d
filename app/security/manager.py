"""The security manager: our user model, the shared limiter, login auditing, a rate-limited JSON login."""

from __future__ import annotations

from flask import current_app, g, has_request_context, jsonify, request
from flask_appbuilder.hooks import before_request
from flask_appbuilder.security.api import SecurityApi
from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_appbuilder.security.sqla.models import assoc_permissionview_role
from flask_appbuilder.security.views import UserDBModelView
from flask_appbuilder.utils.limit import Limit
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter.util import get_remote_address

from app.models.employee import CrmUser
from app.security import fab_views
from app.services import audit


def _api_login_limit() -> str:
    return current_app.config["CRM_API_LOGIN_LIMIT"]


class CrmSecurityApi(SecurityApi):
    """FAB's JSON login (/api/v1/security/login) with its own rate limit: FAB limits only the form."""

    limits = [Limit(_api_login_limit, key_func=get_remote_address, methods=("POST",))]

    @before_request(only=["login"])
    def _require_provider(self):
        """FAB reads `provider` with [] (a KeyError, 500, when it is left out): 400 naming it."""
        body = request.get_json(silent=True) if request.is_json else None
        if isinstance(body, dict) and "provider" not in body:
            return self.response(400, message=_("%(field)s is required", field="provider"), field="provider")
        return None


def _unauthorized(reason):
    """Flask-JWT-Extended's refusals (a malformed JWT is its 422, its body `{"msg"}`) as 401 `{"message"}`,
    like every other refusal of the API."""
    def answer(*_args):
        return jsonify(message=str(reason)), 401

    return answer


class CrmUserDBModelView(UserDBModelView):
    list_columns = ["first_name", "last_name", "username", "email", "active", "roles", "employee"]
    show_fieldsets = [
        (_l("User info"), {"fields": ["username", "active", "roles", "login_count", "employee"]}),
        (_l("Personal Info"), {"fields": ["first_name", "last_name", "email"], "expanded": True}),
        (_l("Audit Info"), {"fields": ["last_login", "fail_login_count", "created_on", "changed_on"],
                            "expanded": False}),
    ]
    label_columns = {**UserDBModelView.label_columns, **fab_views.USER_LABELS}
    formatters_columns = fab_views.USER_FORMATTERS
    # roles by their translated names
    add_form_extra_fields = {**UserDBModelView.add_form_extra_fields, **fab_views.role_field()}
    edit_form_extra_fields = {**(UserDBModelView.edit_form_extra_fields or {}), **fab_views.role_field()}


class CrmSecurityManager(SecurityManager):
    user_model = CrmUser
    userdbmodelview = CrmUserDBModelView
    rolemodelview = fab_views.RoleModelView
    groupmodelview = fab_views.UserGroupModelView
    userstatschartview = None  # FAB's chart loads every user into Python and labels itself in English
    security_api = CrmSecurityApi

    def exist_permission_on_roles(self, view_name, permission_name, role_ids):
        """FAB asks the database once per check, and a list page checks about 70 (menu, buttons, links):
        the roles' permissions are read once per request instead."""
        if not has_request_context():
            return super().exist_permission_on_roles(view_name, permission_name, role_ids)
        key = tuple(sorted(role_ids))
        cached = g.get("_crm_role_permissions")
        if cached is None or cached[0] != key:
            pv, perm, menu = self.permissionview_model, self.permission_model, self.viewmenu_model
            rows = (self.session.query(menu.name, perm.name).select_from(pv)
                    .join(assoc_permissionview_role, pv.id == assoc_permissionview_role.c.permission_view_id)
                    .join(perm, perm.id == pv.permission_id).join(menu, menu.id == pv.view_menu_id)
                    .filter(assoc_permissionview_role.c.role_id.in_(role_ids)))
            cached = g._crm_role_permissions = (key, {(view, name) for view, name in rows})
        return (view_name, permission_name) in cached[1]

    def create_limiter(self, app):
        from app.extensions import limiter

        limiter.init_app(app)
        return limiter

    def create_jwt_manager(self, app):
        jwt = super().create_jwt_manager(app)
        jwt.unauthorized_loader(_unauthorized(_l("Missing JWT")))
        jwt.invalid_token_loader(_unauthorized(_l("Invalid JWT")))
        jwt.expired_token_loader(_unauthorized(_l("Expired JWT")))
        jwt.revoked_token_loader(_unauthorized(_l("Revoked JWT")))
        jwt.needs_fresh_token_loader(_unauthorized(_l("Fresh JWT required")))
        jwt.user_lookup_error_loader(_unauthorized(_l("Unknown or inactive user")))
        return jwt

    def add_permissions_view(self, base_permissions, view_menu):
        """A page and its API share one resource name: give FAB the union of their permissions,
        or FAB deletes (from every role) whatever the other one declared."""
        union = set(base_permissions)
        for view in self.appbuilder.baseviews:
            if getattr(view, "class_permission_name", None) == view_menu:
                union |= set(view.base_permissions or ())
        return super().add_permissions_view(sorted(union), view_menu)

    def validate_api_key(self, api_key_string):
        """FAB's ApiKey.user is FAB's plain User, whose is_active ignores the HR status: load ours."""
        user = super().validate_api_key(api_key_string)
        if user is None:
            return None
        user_id = user.id
        self.session.expunge(user)
        user = self.get_user_by_id(user_id)
        if user is None or not user.is_active:
            g._api_key_user = False
            g.user = None
            return None
        g.user = user
        return user

    def auth_user_db(self, username, password):
        user = super().auth_user_db(username, password)
        if user is None:
            known = self.find_user(username=username) if username else None
            inactive = known is not None and not known.is_active
            reason = "inactive or resigned" if inactive else "bad credentials"
            audit.record(self.session, "login_failure", target_type="user",
                         target_id=known.id if known else None,
                         summary=f"{username}: {reason}"[:255])
        else:
            with audit.acting_as(user.id, user.username):
                audit.record(self.session, "login_success", target_type="user", target_id=user.id,
                             summary=user.username)
        self.session.commit()
        return user
