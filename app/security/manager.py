"""The security manager: our user model, the shared limiter, login auditing, a rate-limited JSON login."""

from __future__ import annotations

from flask import current_app, g, jsonify, request
from flask_appbuilder.hooks import before_request
from flask_appbuilder.security.api import SecurityApi
from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_appbuilder.security.views import UserDBModelView
from flask_appbuilder.utils.limit import Limit
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter.util import get_remote_address

from app.models.employee import CrmUser
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
    label_columns = {**UserDBModelView.label_columns, "employee": _l("Employee")}


class CrmSecurityManager(SecurityManager):
    user_model = CrmUser
    userdbmodelview = CrmUserDBModelView
    security_api = CrmSecurityApi

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
