"""The segment builder's controls and words: the choices of each criterion (tags with their source,
dictionary items, campaigns, statuses), the posted form read back into criteria, and a segment's
criteria summarised in the reader's language. The rules (what a criterion may hold) are
app.services.segments.validate's; this module only reads and shows."""

from __future__ import annotations

import re

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from app.models.bigdata import CUSTOMER, IMPORTED, MANUAL, OPPORTUNITY, RULE, Tag
from app.models.marketing import MarketingCampaign
from app.models.metadata import DictItem
from app.models.sales import STATUSES
from app.services import metadata
from app.services import segments as seg
from app.services.reference import OPPORTUNITY_STAGE, PRODUCT_LINE
from app.views.sales import STATUS_LABELS

SUBJECT_LABELS = {CUSTOMER: _l("Customers"), OPPORTUNITY: _l("Opportunities")}
TAG_SOURCE_LABELS = {MANUAL: _l("Manual"), RULE: _l("Rule"), IMPORTED: _l("Imported")}
TAG_SUBJECT_LABELS = {CUSTOMER: _l("Customer"), OPPORTUNITY: _l("Opportunity")}
CONSENT_CHOICES = (("", _l("Any")), ("yes", _l("Yes")), ("no", _l("No")))
LIST_KEYS = ("tags_any", "tags_all", "tags_none", "stages", "product_lines", "campaigns", "statuses")
NUMBER_KEYS = tuple(seg.NUMBERS)
SEPARATORS = re.compile(r"[,，、;；\s]+")
CAMPAIGN_CHOICES_MAX = 500


def tag_choices(session) -> list[tuple[int, str]]:
    """Every enabled tag as "name · customer tag · rule" (its subject and source)."""
    rows = session.scalars(select(Tag).where(Tag.enabled.is_(True)).order_by(Tag.subject, Tag.name, Tag.id))
    return [(t.id, f"{t.name} · {TAG_SUBJECT_LABELS.get(t.subject, t.subject)} · "
                   f"{TAG_SOURCE_LABELS.get(t.source, t.source)}") for t in rows]


def campaign_choices(session) -> list[tuple[int, str]]:
    rows = session.execute(select(MarketingCampaign.id, MarketingCampaign.code, MarketingCampaign.name)
                           .order_by(MarketingCampaign.active.desc(), MarketingCampaign.start_date.desc(),
                                     MarketingCampaign.id.desc()).limit(CAMPAIGN_CHOICES_MAX))
    return [(i, f"{name} ({code})") for i, code, name in rows]


def choices(session) -> dict:
    """The options of every multi-select of the builder."""
    return {
        "tags": tag_choices(session),
        "stages": [(i.id, i.label) for i in metadata.dict_items(session, OPPORTUNITY_STAGE)],
        "product_lines": [(i.id, i.label) for i in metadata.dict_items(session, PRODUCT_LINE)],
        "campaigns": campaign_choices(session),
        "statuses": [(s, str(STATUS_LABELS.get(s, s))) for s in STATUSES],
        "subjects": [(k, str(v)) for k, v in SUBJECT_LABELS.items()],
        "consent": [(k, str(v)) for k, v in CONSENT_CHOICES],
    }


def criteria_from_form(form) -> dict:
    """The builder's posted fields as unvalidated criteria (the same object the live count's script
    sends)."""
    criteria: dict = {}
    for key in LIST_KEYS:
        values = [v for v in form.getlist(key) if v != ""]
        if values:
            criteria[key] = values
    regions = [r for r in SEPARATORS.split(form.get("regions") or "") if r]
    if regions:
        criteria["regions"] = regions
    for key in NUMBER_KEYS:
        value = (form.get(key) or "").strip()
        if value:
            criteria[key] = value
    consent = form.get("consent") or ""
    if consent in ("yes", "no"):
        criteria["consent"] = consent == "yes"
    elif consent:
        criteria["consent"] = consent  # refused by validate, naming the field
    return criteria


def form_values(segment=None, criteria: dict | None = None) -> dict:
    """What the builder's fields show: the segment's (or the posted) criteria, lists as strings."""
    c = criteria if criteria is not None else (seg.criteria_of(segment) if segment is not None else {})
    values = {key: [str(v) for v in c.get(key, ())] for key in LIST_KEYS}
    values["regions"] = ", ".join(c.get("regions", ())) if isinstance(c.get("regions"), list) else ""
    for key in NUMBER_KEYS:
        values[key] = "" if c.get(key) is None else str(c[key])
    consent = c.get("consent")
    values["consent"] = "yes" if consent is True else "no" if consent is False else ""
    return values


# --- in words -------------------------------------------------------------------------------------
class Names:
    """Names of the tags, dictionary items and campaigns some criteria refer to, read once."""

    def __init__(self, session, criteria_list):
        wanted = {"tag": set(), "item": set(), "campaign": set()}
        for c in criteria_list:
            for key in ("tags_any", "tags_all", "tags_none"):
                wanted["tag"].update(c.get(key, ()))
            for key in ("stages", "product_lines"):
                wanted["item"].update(c.get(key, ()))
            wanted["campaign"].update(c.get("campaigns", ()))
        self.tags = dict(session.execute(select(Tag.id, Tag.name).where(Tag.id.in_(wanted["tag"]))).all())
        items = session.scalars(select(DictItem).where(DictItem.id.in_(wanted["item"])))
        self.items = {i.id: i for i in items}
        self.campaigns = dict(session.execute(select(MarketingCampaign.id, MarketingCampaign.name)
                                              .where(MarketingCampaign.id.in_(wanted["campaign"]))).all())

    def item(self, item_id: int) -> str:
        item = self.items.get(item_id)
        if item is None:
            return f"#{item_id}"
        return item.label


def describe(criteria: dict, subject: str, names: Names) -> list[str]:
    """The criteria in words, one phrase per criterion (the reader's language)."""
    c = criteria
    words = []

    def listed(values, name_of):
        return ", ".join(str(name_of(v)) for v in values)

    tag = lambda t: names.tags.get(t, f"#{t}")  # noqa: E731
    if "tags_any" in c:
        words.append(_("Any of the tags %(names)s", names=listed(c["tags_any"], tag)))
    if "tags_all" in c:
        words.append(_("All of the tags %(names)s", names=listed(c["tags_all"], tag)))
    if "tags_none" in c:
        words.append(_("None of the tags %(names)s", names=listed(c["tags_none"], tag)))
    if "stages" in c:
        words.append(_("Stage: %(names)s", names=listed(c["stages"], names.item)))
    if "product_lines" in c:
        words.append(_("Product line: %(names)s", names=listed(c["product_lines"], names.item)))
    if "campaigns" in c:
        words.append(_("Campaign: %(names)s", names=listed(c["campaigns"],
                                                          lambda i: names.campaigns.get(i, f"#{i}"))))
    if "statuses" in c:
        words.append(_("Status: %(names)s", names=listed(c["statuses"], lambda s: STATUS_LABELS.get(s, s))))
    if "regions" in c:
        words.append(_("Region: %(names)s", names=", ".join(c["regions"])))
    if "lessons_min" in c:
        words.append(_("Attended at least %(n)s lessons", n=c["lessons_min"]))
    if "active_within_days" in c:
        words.append(_("In class within %(n)s days", n=c["active_within_days"]))
    if "contacted_within_days" in c:
        words.append(_("Contacted within %(n)s days", n=c["contacted_within_days"]))
    if "not_contacted_days" in c:
        words.append(_("Not contacted for %(n)s days", n=c["not_contacted_days"]))
    if "win_min" in c and "win_max" in c:
        words.append(_("Win probability %(low)s%%–%(high)s%%", low=c["win_min"], high=c["win_max"]))
    elif "win_min" in c:
        words.append(_("Win probability at least %(n)s%%", n=c["win_min"]))
    elif "win_max" in c:
        words.append(_("Win probability at most %(n)s%%", n=c["win_max"]))
    if "consent" in c:
        words.append(_("Marketing consent: yes") if c["consent"] else _("Marketing consent: no"))
    if not words:
        words.append(_("Every customer") if subject == CUSTOMER else _("Every opportunity"))
    return words


def count_label(n: int, subject: str) -> str:
    if n == 1:
        return _("%(n)s customer", n=1) if subject == CUSTOMER else _("%(n)s opportunity", n=1)
    return (_("%(n)s customers", n=f"{n:,}") if subject == CUSTOMER
            else _("%(n)s opportunities", n=f"{n:,}"))
