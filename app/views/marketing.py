"""Marketing › Campaigns, Campaign Spend (typed and CSV import) and the Marketing Report; its API.

The rules are app.services.marketing (campaigns, typed spend), app.services.marketing_import (the ad
platform's CSV) and app.services.marketing_report; the report's page and API are app.views.marketing_report.
Spend figures are money of the whole company: their list shows rows only to viewers whose data scope is all.
"""

from __future__ import annotations

from flask import flash, request, url_for
from flask_appbuilder import expose
from flask_appbuilder.fieldwidgets import BS3TextFieldWidget, DatePickerWidget, Select2Widget
from flask_appbuilder.forms import DynamicForm
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.urltools import get_filter_args
from flask_babel import lazy_gettext as _l
from markupsafe import escape
from sqlalchemy import false, select
from wtforms import DateField, SelectField, StringField
from wtforms.validators import Optional

from app.extensions import db
from app.models.marketing import SPEND_IMPORTED, SPEND_TYPED, CampaignSpend, MarketingCampaign
from app.models.security import SCOPE_ALL
from app.security import policy
from app.security.scope import current_viewer
from app.services import marketing, marketing_import
from app.services.reference import MARKETING_CHANNEL, PRODUCT_LINE
from app.views import uow
from app.views.base import CrmModelView

CATEGORY = "Marketing"
MAX_ERRORS_SHOWN = 500
LABELS = {
    "code": _l("Tracking code"), "name": _l("Name"), "channel": _l("Marketing channel"),
    "product_line": _l("Product line"), "budget": _l("Budget (yuan)"), "start_date": _l("Start date"),
    "end_date": _l("End date"), "active": _l("Enabled"), "note": _l("Note"), "created_at": _l("Created at"),
    "updated_at": _l("Updated at"), "campaign": _l("Campaign"), "day": _l("Day"),
    "amount": _l("Spend (yuan)"), "impressions": _l("Impressions"), "clicks": _l("Clicks"),
    "origin": _l("Recorded by"), "file": _l("File"),
}
ORIGINS = {SPEND_TYPED: _l("Typed in"), SPEND_IMPORTED: _l("Imported")}


class CampaignView(CrmModelView):
    """Campaigns: channel, budget, period, tracking code (see app.services.marketing for the rules)."""

    datamodel = SQLAInterface(MarketingCampaign)
    class_permission_name = policy.MARKETING_CAMPAIGN
    list_title = _l("Marketing Campaigns")
    add_title, edit_title, show_title = _l("Add campaign"), _l("Edit campaign"), _l("Marketing campaign")
    list_columns = ["code", "name", "channel", "product_line", "budget", "start_date", "end_date", "active"]
    show_columns = ["code", "name", "channel", "product_line", "budget", "start_date", "end_date", "active",
                    "note", "created_at", "updated_at"]
    add_columns = edit_columns = ["code", "name", "channel", "product_line", "budget", "start_date",
                                  "end_date", "active", "note"]
    search_columns = ["code", "name", "channel", "product_line", "active", "start_date", "end_date"]
    order_columns = ["code", "name", "budget", "start_date", "end_date"]
    base_order = ("start_date", "desc")
    dict_fields = {"channel": MARKETING_CHANNEL, "product_line": PRODUCT_LINE}
    label_columns = LABELS
    description_columns = {
        "code": _l("The utm_campaign of the ad links and the campaign leads carry: letters, digits, - and _; "
                   "it cannot change once leads carry it"),
        "end_date": _l("Empty: still running"),
    }

    def check_item(self, item, creating):
        marketing.check_campaign(db.session, item, creating)

    def check_delete(self, item):
        marketing.check_delete(db.session, item)

    def pre_add(self, item):
        super().pre_add(item)
        item.created_by_id = current_viewer().employee_id

    def post_add(self, item):
        """Leads that came in with this tracking code before the campaign was entered join it."""
        marketing.attach_leads(db.session, item)
        db.session.commit()


# --- spend ------------------------------------------------------------------------------------------------
class MoneyViewerFilter(BaseFilter):
    """Spend rows for viewers whose data scope is all; none for the others."""

    name = "Money viewers"
    arg_name = "money"

    def apply(self, query, value):
        return query if current_viewer().scope == SCOPE_ALL else query.filter(false())


def _campaign_choices():
    rows = db.session.execute(select(MarketingCampaign.id, MarketingCampaign.code, MarketingCampaign.name)
                              .order_by(MarketingCampaign.start_date.desc(), MarketingCampaign.code))
    return [("", "—")] + [(str(i), f"{code} — {name}") for i, code, name in rows]


class SpendAddForm(DynamicForm):
    """Typing a day's spend; the same day typed again replaces its figure (app.services.marketing)."""

    campaign = SelectField(_l("Campaign"), choices=_campaign_choices, validate_choice=False,
                           widget=Select2Widget())
    day = DateField(_l("Day"), validators=[Optional()], widget=DatePickerWidget())
    amount = StringField(_l("Spend (yuan)"), widget=BS3TextFieldWidget())
    impressions = StringField(_l("Impressions"), validators=[Optional()], widget=BS3TextFieldWidget())
    clicks = StringField(_l("Clicks"), validators=[Optional()], widget=BS3TextFieldWidget())


class CampaignSpendView(CrmModelView):
    """Daily spend per campaign: typed in here, or imported from the ad platform's CSV (/import)."""

    datamodel = SQLAInterface(CampaignSpend)
    class_permission_name = policy.MARKETING_CAMPAIGN
    method_permission_name = {**policy.METHOD_PERMISSIONS, "import_csv": "write"}
    base_filters = [["id", MoneyViewerFilter, lambda: []]]
    list_title = _l("Campaign Spend")
    add_title, edit_title, show_title = _l("Record spend"), _l("Edit spend"), _l("Campaign spend")
    add_form = SpendAddForm
    list_columns = ["day", "campaign", "amount", "impressions", "clicks", "origin", "updated_at"]
    show_columns = ["campaign", "day", "amount", "impressions", "clicks", "origin", "created_at",
                    "updated_at"]
    add_columns = ["campaign", "day", "amount", "impressions", "clicks"]
    edit_columns = ["amount", "impressions", "clicks"]  # the campaign and day are what the figure is of
    search_columns = ["campaign", "day", "origin"]
    order_columns = ["day", "amount", "impressions", "clicks"]
    base_order = ("day", "desc")
    label_columns = LABELS
    formatters_columns = {"origin": lambda v: ORIGINS.get(v, v)}
    list_template = "marketing/spend_list.html"

    def check_form(self, form, pk) -> None:
        if pk is not None:
            return super().check_form(form, pk)
        raw = form.campaign.data or ""
        campaign_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else None
        with db.session.no_autoflush:
            try:
                marketing.parse_spend(db.session, campaign_id, form.day.data, form.amount.data,
                                      form.impressions.data, form.clicks.data)
            finally:
                db.session.rollback()
        form.spend_args = (campaign_id, form.day.data, form.amount.data, form.impressions.data,
                           form.clicks.data)
        return None

    def check_item(self, item, creating):
        marketing.check_spend_edit(item)

    def _add(self):
        get_filter_args(self._filters, disallow_if_not_in_search=False)
        form = self.add_form.refresh()
        if request.method == "POST" and form.validate():
            row, exc = uow.run(marketing.record_spend, db.session, *form.spend_args,
                               created_by_id=current_viewer().employee_id)
            if exc is None:
                flash(str(_l("Spend of %(code)s on %(day)s: ¥%(amount)s", code=row.campaign.code,
                             day=row.day.isoformat(), amount=row.amount)), "success")
                return None
            field = form[exc.field] if exc.field in form else form.amount
            field.errors = [*field.errors, str(escape(exc.message))]
        return self._get_add_widget(form=form)

    @expose("/import", methods=["GET", "POST"])
    @has_access
    def import_csv(self):
        """The ad platform's CSV: upload, import now, show what was written and the bad rows."""
        result = error = None
        if request.method == "POST":
            f = request.files.get("file")
            data = f.read(marketing_import.MAX_BYTES + 1) if f is not None else None
            result, exc = uow.run(marketing_import.import_spend, db.session, f.filename if f else None, data,
                                  created_by_id=current_viewer().employee_id)
            error = exc.message if exc is not None else None
        return self.render_template(
            "marketing/spend_import.html", result=result, error=error, max_rows=marketing_import.MAX_ROWS,
            max_mb=marketing_import.MAX_BYTES // 2**20, headers=marketing_import.HEADERS,
            labels=LABELS, max_errors=MAX_ERRORS_SHOWN, back=url_for("CampaignSpendView.list"),
            title=_l("Import spend"))


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
    from app.views import marketing_report

    appbuilder.add_view(CampaignView, "Marketing Campaigns", icon="fa-bullhorn", label=_l("Campaigns"),
                        category=CATEGORY, category_label=_l("Marketing"), category_icon="fa-bullhorn")
    appbuilder.add_view(CampaignSpendView, "Campaign Spend", icon="fa-jpy", label=_l("Campaign Spend"),
                        category=CATEGORY)
    marketing_report.register(appbuilder, CATEGORY)

