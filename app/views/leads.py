"""Lead intake and the customer domain: the back-office lead form, the intake REST API,
the customer list and the registration endpoint of the learning / e-commerce side.

Every way in goes through app.services.leads (parse → intake): phones normalised to E.164, dictionary
choices limited to enabled items, one customer per phone, sticky ownership or the "reject" duplicate
policy. A lead that creates a waiting opportunity asks the dispatch engine to run (app.jobs.leads).
"""

from __future__ import annotations

from flask import current_app, flash, g, redirect, request, url_for
from flask_appbuilder import expose
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.fieldwidgets import BS3TextAreaFieldWidget, BS3TextFieldWidget, Select2Widget
from flask_appbuilder.forms import DynamicForm
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.urltools import get_filter_args
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload
from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from app.extensions import db
from app.jobs.leads import request_dispatch
from app.models.bigdata import CUSTOMER
from app.models.sales import OWNED, POOLED, WAITING, Customer, Lead
from app.security import policy
from app.security.masking import mask_phones_in_text
from app.security.scope import current_viewer
from app.services import customers, inputs, marketing, metadata
from app.services.errors import DomainError
from app.services.leads import (
    INTENTION,
    PRODUCT_LINE,
    SOURCE,
    IntakeResult,
    Vocabulary,
    intake,
    parse,
)
from app.views import uow
from app.views.base import CrmModelRestApi, CrmModelView
from app.views.customer_merge import NotMergedFilter
from app.views.segments_filter import segment_filter

#: Mapped to routes a view does not offer: no role holds a permission of that name, so FAB hides
#: the buttons (its templates would otherwise link to the missing route).
NOT_OFFERED = "not_offered"
API_KEY_MAX = 100
LEAD_BODY_MAX = 64 * 1024
CHANNEL_LABELS = {"form": _l("Back-office form"), "import": _l("File import"), "api": _l("API"),
                  "web": _l("Public web form")}
LEAD_LABELS = {
    "name": _l("Name"), "phone": _l("Phone"), "source": _l("Lead source"), "campaign": _l("Campaign"),
    "product_line": _l("Product line"), "region": _l("Region"), "intention_level": _l("Intention level"),
    "consult_note": _l("Consult note"), "channel": _l("Channel"), "customer": _l("Customer"),
    "opportunity": _l("Opportunity"), "client_key": _l("Idempotency key"), "created_at": _l("Created at"),
    "updated_at": _l("Updated at"), "registered_user_id": _l("Registered user id"),
    "marketing_consent": _l("Marketing consent"), "filename": _l("File"), "total_rows": _l("Rows"),
    "created_rows": _l("Created"), "duplicate_rows": _l("Duplicates"), "error_rows": _l("Errors"),
    "id": _l("Status"), "marketing_campaign": _l("Marketing campaign"),
}


def _region() -> str:
    return current_app.config["CRM_DEFAULT_REGION"]


def _actor_name() -> str:
    user = getattr(g, "user", None)
    return getattr(user, "username", None) or "web"


def _dict_choices(type_code: str):
    """Choices of a dropdown: the enabled items of a dictionary, read when the form is built."""

    def choices():
        zh = str(get_locale() or "").startswith("zh")
        items = metadata.dict_items(db.session, type_code)
        return [("", "—")] + [(i.code, i.label_zh if zh else i.label_en) for i in items]

    return choices


def _campaign_choices():
    """The campaign dropdown of a new lead: the active campaigns' tracking codes (blank: none)."""
    return [("", "—")] + [(code, f"{code} — {name}") for code, name in marketing.active_campaigns(db.session)]


def outcome_message(result: IntakeResult) -> str:
    """What became of a lead, for the person who entered it."""
    opp = result.opportunity
    if result.created_opportunity:
        return str(_l("Lead saved: new opportunity #%(id)d created, waiting for dispatch", id=opp.id))
    if opp.status == OWNED:
        return str(_l("Lead saved: joined the open opportunity #%(id)d of the same customer and product "
                      "line, which stays with its owner %(owner)s (sticky ownership)",
                      id=opp.id, owner=str(opp.owner)))
    if opp.status == POOLED:
        return str(_l("Lead saved: joined the open opportunity #%(id)d of the same customer and product "
                      "line, in the public pool %(pool)s", id=opp.id, pool=str(opp.pool)))
    return str(_l("Lead saved: joined the open opportunity #%(id)d of the same customer and product line, "
                  "still waiting for dispatch", id=opp.id))


# --- leads -----------------------------------------------------------------------------------------
class LeadInterface(SQLAInterface):
    """Loads a page of leads with their dictionary items and opportunity in two extra queries."""

    def apply_all(self, query, *args, **kwargs):
        query = super().apply_all(query, *args, **kwargs)
        if self.obj is not Lead:  # FAB builds the interfaces of related models from this class too
            return query
        return query.options(selectinload(Lead.product_line), selectinload(Lead.source),
                             selectinload(Lead.opportunity), selectinload(Lead.marketing_campaign))


class LeadAddForm(DynamicForm):
    """The back-office form. Validation is app.services.leads.parse (see LeadView.check_form), so a
    choice that is no longer offered (a disabled item) reads as a field error, not a crash."""

    name = StringField(_l("Name"), validators=[Optional(), Length(max=64)], widget=BS3TextFieldWidget())
    phone = StringField(_l("Phone"), widget=BS3TextFieldWidget(),
                        description=_l("Mainland numbers may omit +86; stored as +86…"))
    product_line = SelectField(_l("Product line"), choices=_dict_choices(PRODUCT_LINE), validate_choice=False,
                               widget=Select2Widget())
    source = SelectField(_l("Lead source"), choices=_dict_choices(SOURCE), validate_choice=False,
                         widget=Select2Widget())
    intention_level = SelectField(_l("Intention level"), choices=_dict_choices(INTENTION),
                                  validate_choice=False, widget=Select2Widget())
    campaign = SelectField(_l("Campaign"), choices=_campaign_choices, validate_choice=False,
                           widget=Select2Widget())
    region = StringField(_l("Region"), validators=[Optional(), Length(max=64)], widget=BS3TextFieldWidget())
    consult_note = TextAreaField(_l("Consult note"), validators=[Optional(), Length(max=4000)],
                                 widget=BS3TextAreaFieldWidget())


class LeadView(CrmModelView):
    datamodel = LeadInterface(Lead)
    class_permission_name = policy.LEAD
    list_title = show_title = _l("Leads")
    add_title, edit_title = _l("Add Lead"), _l("Edit Lead")
    add_form = LeadAddForm
    list_columns = ["created_at", "name", "phone", "product_line", "source", "campaign", "region", "channel",
                    "opportunity"]
    show_columns = ["name", "phone", "customer", "opportunity", "product_line", "source", "campaign",
                    "marketing_campaign", "region", "consult_note", "channel", "client_key", "created_at"]
    add_columns = ["name", "phone", "product_line", "source", "intention_level", "campaign", "region",
                   "consult_note"]
    edit_columns = ["name", "campaign", "region", "consult_note"]  # who and what stay as captured
    export_columns = ["created_at", "name", "phone", "product_line", "source", "campaign", "region",
                      "channel", "opportunity", "consult_note"]
    # marketing_campaign: the marketing report's drill-down (_flt_0_marketing_campaign=<id>).
    search_columns = ["name", "product_line", "source", "campaign", "marketing_campaign", "region", "channel",
                      "created_at"]
    order_columns = ["created_at", "name", "campaign", "region", "channel"]
    base_order = ("id", "desc")
    phone_columns = ("phone",)
    dict_fields = {"product_line": PRODUCT_LINE, "source": SOURCE}
    label_columns = LEAD_LABELS
    formatters_columns = {"channel": lambda v: CHANNEL_LABELS.get(v, v), "consult_note": mask_phones_in_text}
    exclude_route_methods = {"delete"}  # a lead is a record of what came in
    method_permission_name = {**policy.METHOD_PERMISSIONS, "delete": NOT_OFFERED}

    def check_form(self, form, pk) -> None:
        if pk is not None:
            return super().check_form(form, pk)
        row = {name: form[name].data for name in self.add_columns}
        values, problems = parse(row, Vocabulary(db.session), _region())
        if problems:
            # FAB renders field errors as markup and these messages quote the input: escape them
            # (the one raised is escaped by CheckedForm).
            *others, (first, message) = problems.items()
            for name, msg in others:
                form[name].errors = [*form[name].errors, str(escape(msg))]
            raise DomainError(message, field=first)
        values.created_by_id = current_viewer().employee_id
        form.lead_input = values

    def pre_update(self, item):
        super().pre_update(item)
        item.campaign_id = marketing.campaign_id_for(db.session, item.campaign)  # the edited tracking code

    def _add(self):
        get_filter_args(self._filters, disallow_if_not_in_search=False)
        form = self.add_form.refresh()
        if request.method == "POST" and form.validate():
            result, exc = uow.run(intake, db.session, form.lead_input, "form", actor=_actor_name())
            if exc is not None:  # e.g. the "reject" duplicate policy
                field = form[exc.field] if exc.field in form else form.phone
                field.errors = [*field.errors, str(escape(exc.message))]
            else:
                flash(outcome_message(result), "success")
                if result.opportunity.status == WAITING:
                    request_dispatch()
                return None
        return self._get_add_widget(form=form)


# --- customers -------------------------------------------------------------------------------------
class CustomerView(CrmModelView):
    """Customers: visible to whoever may see one of their opportunities; phones masked."""

    datamodel = SQLAInterface(Customer)
    class_permission_name = policy.CUSTOMER
    # Merged customers leave the list; ?segment= keeps a saved segment's (app/views/segments_filter.py).
    base_filters = [["id", NotMergedFilter, lambda: []], ["id", segment_filter(CUSTOMER), lambda: []]]
    segment_subject = CUSTOMER
    list_title = show_title = _l("Customers")
    edit_title = _l("Edit Customer")
    add_title = _l("Add Customer")
    list_columns = ["name", "phone", "registered_user_id", "region", "created_at"]
    show_columns = ["name", "phone", "registered_user_id", "region", "marketing_consent", "created_at",
                    "updated_at"]
    edit_columns = ["name", "region", "marketing_consent"]
    search_columns = ["name", "registered_user_id", "region", "created_at"]
    order_columns = ["name", "created_at"]
    base_order = ("id", "desc")
    phone_columns = ("phone",)
    label_columns = LEAD_LABELS
    related_views = [LeadView]
    # Customers come from leads and registrations, and stay.
    exclude_route_methods = {"add", "delete"}
    method_permission_name = {**policy.METHOD_PERMISSIONS, "add": NOT_OFFERED, "delete": NOT_OFFERED}

    @expose("/show/<pk>")
    @has_access
    def show(self, pk):
        """The customer page of the sales floor (app.views.sales: leads, opportunities, follow-ups,
        assignment history) when it is there; else FAB's page with the customer's leads."""
        if "CustomerPageView.show" in current_app.view_functions:
            return redirect(url_for("CustomerPageView.show", pk=pk))
        return super().show(pk)


# --- REST -----------------------------------------------------------------------------------------
def _lead_body(result: IntakeResult) -> dict:
    lead, opp = result.lead, result.opportunity
    return {"id": lead.id, "customer_id": lead.customer_id, "opportunity_id": opp.id,
            "opportunity_status": opp.status, "created_opportunity": result.created_opportunity,
            "sticky": result.sticky, "replayed": result.replayed}


class LeadApi(CrmModelRestApi):
    """GET /api/v1/lead/ (scoped, phones masked); POST /api/v1/lead/ takes a lead from another system.

    POST is idempotent on the caller's key (header Idempotency-Key, or the body's client_key): the
    first call answers 201, a repeat answers 200 with the same ids and writes nothing. Keys are kept
    per calling account ("api:<user id>:<key>"), so two systems cannot collide or read each other's.
    """

    datamodel = SQLAInterface(Lead)
    resource_name = "lead"
    class_permission_name = policy.LEAD
    list_columns = ["id", "name", "phone", "customer.id", "opportunity.id", "opportunity.status",
                    "product_line.code", "source.code", "campaign", "region", "channel", "created_at"]
    show_columns = list_columns + ["consult_note"]
    text_columns = ("consult_note",)
    add_columns = ["name", "phone", "campaign", "region", "consult_note"]
    search_columns = ["name", "product_line", "source", "campaign", "region", "channel", "created_at"]
    order_columns = ["id", "created_at"]
    phone_columns = ("phone",)
    exclude_route_methods = {"put", "delete"}
    openapi_spec_tag = "Leads"

    def post_headless(self):
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self.response_400(message="The body must be a JSON object")
        if len(request.get_data()) > LEAD_BODY_MAX:  # kept whole as the lead's raw payload
            return self.response(413, message=f"A lead is at most {LEAD_BODY_MAX} bytes of JSON",
                                 field="body")
        header_key = (request.headers.get("Idempotency-Key") or "").strip()
        problems: dict[str, str] = {}
        body_key = inputs.text(problems, "client_key", body.get("client_key"), API_KEY_MAX,
                               numbers=True) or ""
        key = header_key or body_key
        if not problems:
            if not key:
                problems["client_key"] = "required: send an Idempotency-Key header or a client_key field"
            elif header_key and body_key and header_key != body_key:
                problems["client_key"] = "differs from the Idempotency-Key header"
            elif len(key) > API_KEY_MAX:
                problems["client_key"] = f"at most {API_KEY_MAX} characters"
        if problems:
            return self.response(422, message="Invalid lead", errors=problems)
        client_key = f"api:{g.user.id}:{key}"
        replay = self._replay(client_key)
        if replay is not None:
            return replay
        row = {name: body.get(name) for name in ("name", "phone", "source", "campaign", "product_line",
                                                 "region", "intention_level", "consult_note")}
        # Other systems send JSON strings (a phone may come as a number); parse, which file imports share,
        # reads any cell as text.
        problems = {name: "must be a string" for name, value in row.items()
                    if value is not None and not isinstance(value, str)
                    and not (name == "phone" and isinstance(value, int) and not isinstance(value, bool))}
        values, more = parse({k: v for k, v in row.items() if k not in problems}, Vocabulary(db.session),
                             _region())
        problems = {**more, **problems}
        if problems:
            return self.response(422, message="Invalid lead", errors=problems)
        values.client_key, values.raw_payload = client_key, body
        values.created_by_id = current_viewer().employee_id
        try:
            result, exc = uow.run(intake, db.session, values, "api", actor=_actor_name())
        except IntegrityError:  # the same key sent twice at once: the other request wrote it
            db.session.rollback()
            replay = self._replay(client_key)
            if replay is None:
                raise
            return replay
        if exc is not None:
            return self.response(exc.status, **exc.as_dict())
        if result.opportunity.status == WAITING and not result.replayed:
            request_dispatch()
        return self.response(200 if result.replayed else 201, **_lead_body(result))

    def _replay(self, client_key: str):
        lead = db.session.scalar(select(Lead).where(Lead.client_key == client_key))
        if lead is None:
            return None
        return self.response(200, **_lead_body(IntakeResult(lead, lead.opportunity, replayed=True)))


class CustomerRegisterApi(BaseApi):
    """POST /api/v1/customer/register — a user registered on the learning / e-commerce side.

    Body: {"registered_user_id": "...", "phone": "...", "name": "..."}. The customer with that phone
    takes the user id (leads before registration and the registration meet on one customer); 409 when
    the phone and the user id already belong to two different customers.
    """

    resource_name = "customer"
    class_permission_name = policy.CUSTOMER
    method_permission_name = {"register": "write"}
    openapi_spec_tag = "Customers"

    @expose("/register", methods=["POST"])
    @protect()
    @safe
    def register(self):
        """Register (or confirm) a learning / e-commerce user as a customer, merged by phone.
        ---
        post:
          responses:
            200:
              description: The customer (existing, now carrying the user id, or new)
            409:
              description: The phone belongs to another customer than the user id
            422:
              description: A message per bad field
        """
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self.response_400(message="The body must be a JSON object")
        values, problems = customers.parse_registration(body, _region())
        if problems:
            return self.response(422, message="Invalid registration", errors=problems)
        known = db.session.scalar(select(Customer.id).where(
            (Customer.phone == values.phone) | (Customer.registered_user_id == values.registered_user_id))
            .limit(1))
        try:
            customer, exc = uow.run(customers.register, db.session, values)
        except IntegrityError:  # the same registration sent twice at once
            db.session.rollback()
            return self.response(409, message="Registered concurrently: send it again")
        if exc is not None:
            return self.response(exc.status, **exc.as_dict())
        return self.response(200, id=customer.id, registered_user_id=customer.registered_user_id,
                             phone=customer.phone, created=known is None)
