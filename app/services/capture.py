"""Public lead capture: the landing-page form and the chat widget post here (one public endpoint).

The form token: a landing page (and the chat widget) embeds a token signed with the app's SECRET_KEY,
naming the page and its campaign, valid for `capture.form_token_minutes`. A post without a valid,
unexpired token is refused. The page may be cached, so several visitors can hold the same token: the
post's idempotency key is the token together with the phone (a resubmission by the same visitor answers
with the lead the first one made and writes nothing; another visitor's phone makes another lead). A
resubmission whose token has expired meanwhile still answers with its lead (the signature is checked).

`capture_lead` validates the post (fields, honeypot, token, page), then answers a replay, applies the
per-phone limit (`capture.per_phone_per_hour`, counted in SQL: the web leads of that phone in the last
hour, i.e. accepted posts; a replay writes no lead so never counts) and hands the lead to
`app.services.leads.intake` with its campaign, landing page and source; a chat is linked to the lead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import logging
import secrets
from dataclasses import dataclass

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select

from app.models.marketing import LandingPage, MarketingCampaign
from app.models.sales import WAITING, Lead, Opportunity
from app.security.input_guards import unstorable_text
from app.services import customers, metadata
from app.services.errors import DomainError
from app.services.leads import PRODUCT_LINE, SOURCE, LeadInput, intake
from app.services.phones import normalise_phone

log = logging.getLogger(__name__)

TOKEN_SALT = "crm-capture-form"
TOKEN_MAX = 512  # characters: a real token is about 120
CHANNEL = "web"  # Lead.channel of every public post (String(10))
ACTOR = "public"
KEY_PREFIX = "web:"
REFERENCE_CHARS = 12
SOURCE_PAGE, SOURCE_CHAT = "landing_page", "chat"
PER_PHONE_KEY = "capture.per_phone_per_hour"
#: field → longest value accepted (characters, as typed); the phone is normalised after this check.
LIMITS = {"name": 64, "phone": 32, "consult_note": 1000, "page": 80, "utm_campaign": 100, "chat": 64,
          "form_token": TOKEN_MAX}
FIELDS = (*LIMITS, "website")
HONEYPOT = "website"


@dataclass(frozen=True)
class FormToken:
    landing_page_id: int | None
    campaign_id: int | None
    nonce: str


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=TOKEN_SALT)


def issue_token(landing_page_id: int | None, campaign_id: int | None) -> str:
    """A fresh form token for a page (or the chat widget on it); each page view gets its own nonce."""
    return _serializer().dumps({"p": landing_page_id, "c": campaign_id, "n": secrets.token_urlsafe(12)})


def read_token(session, token) -> FormToken:
    """The token's contents; DomainError(field="form_token") when missing, forged or expired.

    422 like any field the visitor can fix by reloading the page (400 is kept for posts no form of ours
    sends: a filled honeypot, a body that is not an object, unstorable text)."""
    if not isinstance(token, str) or not token or len(token) > TOKEN_MAX:
        raise DomainError("The form token is missing or malformed", field="form_token")
    max_age = 60 * metadata.config_value(session, "capture.form_token_minutes")
    try:
        data = _serializer().loads(token, max_age=max_age)
    except SignatureExpired:
        raise DomainError("The form has expired: reload the page and send it again",
                          field="form_token") from None
    except BadSignature:
        raise DomainError("The form token is not valid", field="form_token") from None
    if not isinstance(data, dict) or not isinstance(data.get("n"), str):
        raise DomainError("The form token is not valid", field="form_token")
    page, campaign = data.get("p"), data.get("c")
    return FormToken(page if isinstance(page, int) else None, campaign if isinstance(campaign, int) else None,
                     data["n"])


def _verified_payload(token: str):
    """The payload of a genuine token whatever its age (for a resubmission), else None."""
    try:
        return _serializer().loads(token)
    except BadSignature:
        return None


# --- the command ---------------------------------------------------------------------------------------
@dataclass
class CaptureResult:
    lead: Lead
    opportunity: Opportunity
    reference: str  # what the visitor is told: opaque, the same on a resubmission
    replayed: bool = False  # the same visitor sent the same form again: nothing was written
    created_opportunity: bool = False
    landing_page: LandingPage | None = None
    chat_linked: bool | None = None  # None: no chat; False: the chat session was not found

    @property
    def needs_dispatch(self) -> bool:
        """As the other ways in (app.views.leads): a lead written onto a waiting opportunity."""
        return not self.replayed and self.opportunity.status == WAITING


@dataclass
class _Post:
    name: str | None
    phone: str | None
    consult_note: str | None
    form_token: str | None
    page: str | None
    utm_campaign: str | None
    chat: str | None


def client_key(token: str, phone: str) -> str:
    """The idempotency key of a post: the form token with the normalised phone (pages are cached)."""
    return KEY_PREFIX + hashlib.sha256(f"{token}\n{phone}".encode()).hexdigest()


def reference_of(lead: Lead) -> str:
    """The visitor's reference: the start of the post's key (support can find it: client_key LIKE)."""
    key = lead.client_key or ""
    return key[len(KEY_PREFIX):len(KEY_PREFIX) + REFERENCE_CHARS].upper() if key.startswith(KEY_PREFIX) \
        else f"L{lead.id:011X}"


def _text(form: dict, name: str, *, numbers: bool = False) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int if numbers else str):
        raise DomainError("This field must be text", field=name)
    value = str(value).strip()
    if unstorable_text(value):
        raise DomainError("This field contains a character that cannot be stored", field=name, status=400)
    if len(value) > LIMITS[name]:
        raise DomainError("This field is too long: at most %(limit)d characters", field=name,
                          limit=LIMITS[name])
    return value or None


def _read(form: dict) -> _Post:
    """The fields of a post, checked one by one (the first problem refuses it)."""
    if not isinstance(form, dict):
        raise DomainError("The body must be a JSON object", field="body", status=400)
    honeypot = form.get(HONEYPOT)
    if honeypot not in (None, ""):
        raise DomainError("The field %(name)s must be left empty", field=HONEYPOT, status=400, name=HONEYPOT)
    post = _Post(name=_text(form, "name"), phone=_text(form, "phone", numbers=True),
                 consult_note=_text(form, "consult_note"), form_token=_text(form, "form_token"),
                 page=_text(form, "page"), utm_campaign=_text(form, "utm_campaign"), chat=_text(form, "chat"))
    if post.name is None:
        raise DomainError("Please enter your name", field="name")
    if post.phone is None:
        raise DomainError("Please enter your phone number", field="phone")
    return post


def _replay(session, key: str) -> CaptureResult | None:
    lead = session.scalar(select(Lead).where(Lead.client_key == key))
    if lead is None:
        return None
    return CaptureResult(lead, lead.opportunity, reference_of(lead), replayed=True,
                         landing_page=lead.landing_page)


def _token(session, post: _Post, phone: str) -> FormToken | CaptureResult:
    """The form token's contents; a resubmission of a post whose token expired since answers its lead."""
    try:
        return read_token(session, post.form_token)
    except DomainError:
        if post.form_token and _verified_payload(post.form_token) is not None:
            replay = _replay(session, client_key(post.form_token, phone))
            if replay is not None:
                return replay
        raise


def _check_phone_limit(session, phone: str, now: dt.datetime) -> None:
    """At most `capture.per_phone_per_hour` accepted posts (web leads) per phone in the last hour; a
    limit below 1 switches it off. Counted in SQL through the customer's indexed phone: the rows that
    prove a post was accepted, so a replay (which writes nothing) never counts and nothing is lost when
    Redis restarts."""
    limit = metadata.config_value(session, PER_PHONE_KEY)
    if not isinstance(limit, int) or limit < 1:
        return
    customer = customers.by_phone(session, phone)
    if customer is None:
        return
    accepted = session.scalar(select(func.count(Lead.id)).where(
        Lead.customer_id == customer.id, Lead.phone == phone, Lead.channel == CHANNEL,
        Lead.created_at >= now - dt.timedelta(hours=1)))
    if accepted >= limit:
        raise DomainError("Too many requests for this phone number: please try again later", field="phone",
                          status=429)


def _page(session, token: FormToken, slug: str | None) -> LandingPage | None:
    """The token's landing page (None: the chat widget off a landing page, or a page since deleted);
    a `page` given must be that one."""
    page = session.get(LandingPage, token.landing_page_id) if token.landing_page_id is not None else None
    if slug is not None and (page is None or page.slug != slug):
        raise DomainError("This form does not belong to this page: reload the page and send it again",
                          field="page")
    return page


def _campaign_id(session, token: FormToken, page: LandingPage | None, code: str | None) -> int | None:
    """The token's campaign, else the page's, else the one with the posted tracking code."""
    if token.campaign_id is not None:
        return token.campaign_id
    if page is not None and page.campaign_id is not None:
        return page.campaign_id
    if code:
        return session.scalar(select(MarketingCampaign.id).where(MarketingCampaign.code == code))
    return None


def _product_line(session, page: LandingPage | None, campaign_id: int | None) -> int:
    """The page's product line; else the campaign's; else the first enabled one of the dictionary."""
    if page is not None:
        return page.product_line_id
    if campaign_id is not None:
        line = session.scalar(select(MarketingCampaign.product_line_id)
                              .where(MarketingCampaign.id == campaign_id))
        if line is not None:
            return line
    items = metadata.dict_items(session, PRODUCT_LINE)
    if not items:
        raise DomainError("Leads cannot be taken now: no product line is configured", field="page")
    return items[0].id


def _source(session, code: str) -> int | None:
    return next((i.id for i in metadata.dict_items(session, SOURCE) if i.code == code), None)


def _link_chat(session, chat_token: str, lead: Lead) -> bool:
    """Attach the chat's transcript to the lead (app.services.chat.link_lead), when that is installed."""
    try:
        chat = importlib.import_module("app.services.chat")
    except ImportError:
        chat = None
    link = getattr(chat, "link_lead", None)
    if link is None:
        log.warning("app.services.chat.link_lead is missing: chat %s not linked to lead %s", chat_token[:8],
                    lead.id)
        return False
    try:
        with session.begin_nested():  # a chat that cannot be linked must not cost the lead
            return bool(link(session, chat_token, lead))
    except DomainError as exc:
        log.warning("chat %s not linked to lead %s: %s", chat_token[:8], lead.id, exc)
        return False


def capture_lead(session, form: dict, client_ip: str | None, now: dt.datetime, *, region: str = "CN",
                 user_agent: str | None = None, referer: str | None = None) -> CaptureResult:
    """Take one public post (fields: module constants) into lead intake. The caller commits and, when
    `needs_dispatch`, asks for a dispatch run. Refusals: DomainError naming the field — 400 (honeypot,
    token, page, unstorable text), 409 (the "reject" duplicate policy), 422 (a field), 429 (phone)."""
    post = _read(form)
    phone = normalise_phone(post.phone, region)  # DomainError(field="phone"): no (valid) number
    if post.form_token is None:
        raise DomainError("The form token is missing or malformed", field="form_token")
    token = _token(session, post, phone)
    if isinstance(token, CaptureResult):
        return token
    page = _page(session, token, post.page)
    key = client_key(post.form_token, phone)
    replay = _replay(session, key)
    if replay is not None:
        return replay
    _check_phone_limit(session, phone, now)
    campaign_id = _campaign_id(session, token, page, post.utm_campaign)
    values = LeadInput(
        phone=phone, product_line_id=_product_line(session, page, campaign_id), name=post.name,
        source_id=_source(session, SOURCE_CHAT if post.chat else SOURCE_PAGE),
        campaign=None if campaign_id is not None else post.utm_campaign, campaign_id=campaign_id,
        landing_page_id=page.id if page is not None else None, consult_note=post.consult_note,
        client_key=key,
        raw_payload={"ip": client_ip, "user_agent": (user_agent or "")[:300] or None,
                     "referer": (referer or "")[:500] or None, "page": page.slug if page else post.page,
                     "utm_campaign": post.utm_campaign, "chat": bool(post.chat)})
    try:
        result = intake(session, values, CHANNEL, actor=ACTOR)
    except DomainError as exc:
        if exc.status == 409:  # the "reject" duplicate policy: say it without naming the customer
            raise DomainError("We already have your request for this course: an adviser will contact you",
                              field="phone", status=409) from None
        raise
    linked = _link_chat(session, post.chat, result.lead) if post.chat and not result.replayed else None
    return CaptureResult(result.lead, result.opportunity, reference_of(result.lead), replayed=result.replayed,
                         created_opportunity=result.created_opportunity, landing_page=page,
                         chat_linked=linked)


def page_slug(session, form) -> str | None:
    """The landing page a refused form post goes back to: the `page` posted when it names a page, else the
    page of a genuine token; None when neither does (the answer is then JSON)."""
    if not isinstance(form, dict):
        return None
    slug = form.get("page")
    if isinstance(slug, str) and 0 < len(slug) <= LIMITS["page"] and not unstorable_text(slug):
        if session.scalar(select(LandingPage.id).where(LandingPage.slug == slug)) is not None:
            return slug
    token = form.get("form_token")
    if isinstance(token, str) and 0 < len(token) <= TOKEN_MAX:
        payload = _verified_payload(token)
        page_id = payload.get("p") if isinstance(payload, dict) else None
        if isinstance(page_id, int) and not isinstance(page_id, bool):
            return session.scalar(select(LandingPage.slug).where(LandingPage.id == page_id))
    return None
