"""FAB's own security pages (users, roles, groups) in the reader's language: labels for the
columns FAB leaves unlabelled (it prettifies their names in English), role names by their translated
label, flags as yes / no. The classes keep FAB's names, so endpoints and permissions stay the same."""

from __future__ import annotations

from flask_appbuilder.fields import QuerySelectMultipleField
from flask_appbuilder.fieldwidgets import Select2ManyWidget
from flask_appbuilder.security import views as fab
from flask_babel import lazy_gettext as _l
from wtforms.validators import DataRequired

from app.views import labels


def yes_no(value):
    return _l("Yes") if value else _l("No")


def role_names(roles) -> str:
    return ", ".join(str(labels.role_name(role)) for role in roles or [])


USER_LABELS = {
    "get_full_name": _l("Full name"), "first_name": _l("First name"), "last_name": _l("Last name"),
    "username": _l("Username"), "password": _l("Password"), "active": _l("Active login"),
    "email": _l("E-mail"), "roles": _l("Roles"), "groups": _l("Groups"), "last_login": _l("Last login"),
    "login_count": _l("Login count"), "fail_login_count": _l("Failed login count"),
    "created_on": _l("Created at"), "created_by": _l("Created by"), "changed_on": _l("Changed at"),
    "changed_by": _l("Changed by"), "employee": _l("Employee"),
}
USER_FORMATTERS = {"active": yes_no, "roles": role_names}


def _roles():
    from flask_appbuilder.security.sqla.models import Role

    from app.extensions import db

    return db.session.query(Role).order_by(Role.name)


def role_field() -> dict:
    """The user forms' roles field, listing roles by their translated names."""
    return {"roles": QuerySelectMultipleField(_l("Roles"), query_func=_roles, get_pk_func=lambda r: r.id,
                                               get_label=labels.role_name, widget=Select2ManyWidget(),
                                               validators=[DataRequired()])}


class RoleModelView(fab.RoleModelView):
    label_columns = {"name": _l("Name"), "permissions": _l("Permissions"), "user": _l("Users")}
    formatters_columns = {"name": labels.role_name}


class UserGroupModelView(fab.UserGroupModelView):
    label_columns = {"name": _l("Name"), "label": _l("Label"), "description": _l("Description"),
                     "users": _l("Users"), "roles": _l("Roles")}
    formatters_columns = {"roles": role_names}
