"""Onboard a person (Organisation › Onboard a person): one form creates the employee, their login and its
roles through app.services.onboarding.onboard. A refusal shows on its field and writes nothing.

Its own permission resource ("Onboarding", write) keeps it to administrators: people who may read
employees do not see a menu entry they could not use.
"""

from __future__ import annotations

from flask import current_app, flash, g, redirect, url_for
from flask_appbuilder import SimpleFormView
from flask_appbuilder.fields import QuerySelectField
from flask_appbuilder.fieldwidgets import (
    BS3PasswordFieldWidget,
    BS3TextFieldWidget,
    DatePickerWidget,
    Select2ManyWidget,
    Select2Widget,
)
from flask_appbuilder.forms import DynamicForm
from flask_babel import lazy_gettext as _l
from wtforms import DateField, PasswordField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Email, Optional

from app.extensions import appbuilder, db
from app.models.employee import HR_RESIGNED, Employee
from app.models.org import OrgUnit
from app.services.onboarding import PERSON_ROLES, Onboarding, onboard
from app.views import labels, uow

ONBOARDING = "Onboarding"  # the permission resource (only Admin holds it, through "*")


def _units():
    return db.session.query(OrgUnit).order_by(OrgUnit.name)


def _managers():
    return db.session.query(Employee).filter(Employee.hr_status != HR_RESIGNED).order_by(Employee.name)


def _role_choices():
    return labels.choices("role", PERSON_ROLES)


class OnboardingForm(DynamicForm):
    employee_no = StringField(_l("Employee no."), validators=[DataRequired()], widget=BS3TextFieldWidget())
    name = StringField(_l("Name"), validators=[DataRequired()], widget=BS3TextFieldWidget())
    phone = StringField(_l("Phone"), validators=[Optional()], widget=BS3TextFieldWidget())
    email = StringField(_l("E-mail"), validators=[DataRequired(), Email()], widget=BS3TextFieldWidget(),
                        description=_l("Also the login's e-mail address"))
    org_unit = QuerySelectField(_l("Org unit"), query_func=_units, get_pk_func=lambda u: u.id,
                                widget=Select2Widget(), validators=[DataRequired()])
    position = StringField(_l("Position"), validators=[Optional()], widget=BS3TextFieldWidget())
    manager = QuerySelectField(_l("Manager"), query_func=_managers, get_pk_func=lambda e: e.id,
                               allow_blank=True, blank_text="—", widget=Select2Widget(),
                               validators=[Optional()])
    hired_on = DateField(_l("Hired on"), validators=[Optional()], widget=DatePickerWidget())
    username = StringField(_l("Username"), validators=[DataRequired()], widget=BS3TextFieldWidget(),
                           description=_l("What the person types to sign in"))
    password = PasswordField(_l("Initial password"), validators=[DataRequired()],
                             widget=BS3PasswordFieldWidget(),
                             description=_l("At least 10 characters with a lower-case letter, an upper-case "
                                            "letter and a digit; tell it to the person, who changes it under "
                                            "Profile › Reset my password"))
    roles = SelectMultipleField(_l("Roles"), choices=_role_choices, widget=Select2ManyWidget(),
                                validators=[DataRequired()])


def _may_grant_admin() -> bool:
    return any(role.name == "Admin" for role in getattr(g.user, "roles", []))


class OnboardingView(SimpleFormView):
    """Organisation › Onboard a person."""

    route_base = "/onboarding"
    form = OnboardingForm
    form_title = _l("Onboard a person")
    class_permission_name = ONBOARDING
    method_permission_name = {"this_form_get": "write", "this_form_post": "write"}

    def form_post(self, form):
        req = Onboarding(
            employee_no=form.employee_no.data, name=form.name.data, phone=form.phone.data,
            email=form.email.data, org_unit_id=form.org_unit.data.id if form.org_unit.data else None,
            position=form.position.data, manager_id=form.manager.data.id if form.manager.data else None,
            hired_on=form.hired_on.data, username=form.username.data, password=form.password.data,
            roles=list(form.roles.data or []))
        outcome = uow.run(onboard, db.session, appbuilder.sm, req, may_grant_admin=_may_grant_admin(),
                          region=current_app.config["CRM_DEFAULT_REGION"])
        if outcome.error is not None:
            field = getattr(form, outcome.error.field or "", None)
            if field is not None:
                field.errors = [*field.errors, outcome.error.message]
            else:
                flash(outcome.error.message, "danger")
            widgets = self._get_edit_widget(form=form)
            return self.render_template(self.form_template, title=self.form_title, widgets=widgets,
                                        appbuilder=self.appbuilder), 422
        emp = outcome.result
        flash(str(_l("%(name)s is onboarded and can sign in as %(username)s",
                     name=emp.name, username=emp.user.username)), "success")
        return redirect(url_for("EmployeeView.show", pk=emp.id))


def register(appbuilder) -> None:
    appbuilder.add_view(OnboardingView, "Onboard a person", icon="fa-user-plus", label=_l("Onboard a person"),
                        category="Organisation")
