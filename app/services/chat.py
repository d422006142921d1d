"""Chats from the public widget: start, the visitor's messages and the bot's replies, polling, agents'
replies, closing, and the link to the lead the visitor leaves.

A visitor holds the chat's token (secrets.token_urlsafe, the only handle the public side has); agents find
a chat through its opportunity's data scope (ChatSession.__scope_via__; a chat not yet linked to a lead is
seen only by roles that see everything). Limits: MAX_BODY characters a message, MAX_MESSAGES messages a
chat (the bot's replies and agents' included); a closed chat takes no more messages.

Nothing here is audited: a message is its own record (who, when, what), and neither a reply nor a close
changes ownership, permissions, configuration or money.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field

from sqlalchemy import func, select

from app.clock import utcnow
from app.models.marketing import (
    AGENT,
    BOT,
    CHAT_CLOSED,
    CHAT_OPEN,
    VISITOR,
    ChatMessage,
    ChatSession,
    LandingPage,
    MarketingCampaign,
)
from app.security.scope import Viewer, restrict
from app.services import capture, chat_bot, inputs
from app.services.errors import DomainError

MAX_BODY = 1000
MAX_MESSAGES = 200
TOKEN_MAX = 64  # ChatSession.token
SLUG_MAX, CODE_MAX, LANG_MAX = 80, 100, 16


@dataclass
class Started:
    chat: ChatSession
    form_token: str
    messages: list[ChatMessage]


@dataclass
class Posted:
    messages: list[ChatMessage]  # the visitor's and the bot's reply (none when an agent has taken over)
    contact: dict = field(default_factory=dict)  # {"name", "phone", "complete"} as the bot has them
    form_token: str | None = None  # a fresh form token once name and phone are complete


def _text(name: str, value, limit: int, required: bool = False) -> str | None:
    problems: dict = {}
    value = inputs.text(problems, name, value, limit, required=required)
    inputs.check(problems)
    return value


def _say(session, chat: ChatSession, sender: str, body: str, now: dt.datetime,
         employee_id: int | None = None) -> ChatMessage:
    message = ChatMessage(session_id=chat.id, sender=sender, body=body, employee_id=employee_id,
                          created_at=now)
    session.add(message)
    chat.last_message_at = now
    return message


def _count(session, chat: ChatSession) -> int:
    return session.scalar(select(func.count(ChatMessage.id)).where(ChatMessage.session_id == chat.id))


def transcript(session, chat_id: int) -> list[ChatMessage]:
    return list(session.scalars(select(ChatMessage).where(ChatMessage.session_id == chat_id)
                                .order_by(ChatMessage.id)))


# --- the visitor's side ------------------------------------------------------------------------------
def start(session, page=None, campaign=None, lang=None, client_ip: str | None = None,
          now: dt.datetime | None = None) -> Started:
    """A new chat (optionally on a published landing page and/or for a campaign's tracking code) with the
    bot's greeting, and a form token for the lead the visitor may leave. The caller commits."""
    now = now or utcnow()
    slug, code = _text("page", page, SLUG_MAX), _text("campaign", campaign, CODE_MAX)
    lang = chat_bot.start_language(_text("lang", lang, LANG_MAX))
    landing = None
    if slug:
        landing = session.scalar(select(LandingPage).where(LandingPage.slug == slug,
                                                           LandingPage.published.is_(True)))
        if landing is None:
            raise DomainError("No such page", field="page", status=404)
        if not landing.chat_enabled:
            raise DomainError("Chat is not enabled on this page", field="page", status=403)
    campaign_id = landing.campaign_id if landing else None
    if code:
        campaign_id = session.scalar(select(MarketingCampaign.id).where(MarketingCampaign.code == code))
        if campaign_id is None:
            raise DomainError("No such campaign", field="campaign", status=404)
    chat = ChatSession(token=secrets.token_urlsafe(32), landing_page_id=landing.id if landing else None,
                       campaign_id=campaign_id, status=CHAT_OPEN, started_at=now,
                       client_ip=(client_ip or "")[:64] or None)
    session.add(chat)
    session.flush()
    greeting = _say(session, chat, BOT, chat_bot.say("greet", lang), now)
    session.flush()
    return Started(chat, capture.issue_token(chat.landing_page_id, chat.campaign_id), [greeting])


def by_token(session, token) -> ChatSession:
    """The chat of a visitor's token, or a 404."""
    chat = None
    if isinstance(token, str) and 0 < len(token) <= TOKEN_MAX:
        chat = session.scalar(select(ChatSession).where(ChatSession.token == token))
    if chat is None:
        raise DomainError("No such chat", field="token", status=404)
    return chat


def post_visitor(session, token, body, now: dt.datetime | None = None) -> Posted:
    """The visitor's message and the bot's reply (the bot stays quiet once an agent has answered).
    The caller commits."""
    now = now or utcnow()
    chat = by_token(session, token)
    text = _text("body", body, MAX_BODY, required=True)
    if chat.status == CHAT_CLOSED:
        raise DomainError("This chat is closed", field="token", status=409)
    count = _count(session, chat)
    if count >= MAX_MESSAGES:
        raise DomainError("This chat has reached its limit of %(n)d messages", field="body", status=429,
                          n=MAX_MESSAGES)
    before = transcript(session, chat.id)
    state = chat_bot.read_transcript(before)
    said = [_say(session, chat, VISITOR, text, now)]
    reply = chat_bot.step(state, text)
    if not state.agent_joined and count + 2 <= MAX_MESSAGES:
        said.append(_say(session, chat, BOT, reply, now))
    session.flush()
    token_now = capture.issue_token(chat.landing_page_id, chat.campaign_id) if state.complete else None
    return Posted(said, state.contact(), token_now)


def messages_since(session, token, after=None) -> tuple[ChatSession, list[ChatMessage]]:
    """The chat and its messages after message id `after` (all of them without it): what the widget
    polls."""
    chat = by_token(session, token)
    problems: dict = {}
    after = inputs.whole_number(problems, "after", after, low=0) or 0
    inputs.check(problems)
    return chat, list(session.scalars(select(ChatMessage)
                                      .where(ChatMessage.session_id == chat.id, ChatMessage.id > after)
                                      .order_by(ChatMessage.id).limit(MAX_MESSAGES)))


def link_lead(session, token: str, lead) -> bool:
    """Attach the chat of `token` to `lead` and its opportunity (and to the lead's campaign and landing
    page when the chat has none); False for an unknown token. Called by the public lead endpoint when a
    post names its chat. The caller commits."""
    try:
        chat = by_token(session, token)
    except DomainError:
        return False
    chat.lead_id = lead.id
    chat.opportunity_id = lead.opportunity_id
    if chat.campaign_id is None:
        chat.campaign_id = lead.campaign_id
    if chat.landing_page_id is None:
        chat.landing_page_id = lead.landing_page_id
    session.flush()
    return True


# --- the agents' side -------------------------------------------------------------------------------
def visible_chat(session, chat_id, viewer: Viewer) -> ChatSession:
    """The chat, if the viewer's data scope covers its opportunity (else a 404)."""
    problems: dict = {}
    chat_id = inputs.ident(problems, "chat", chat_id, required=True)
    inputs.check(problems, status=404)
    chat = session.scalar(restrict(select(ChatSession).where(ChatSession.id == chat_id), ChatSession,
                                   viewer)) if chat_id <= inputs.INT_MAX else None
    if chat is None:
        raise DomainError("No such chat, or outside your data scope", field="chat", status=404)
    return chat


def agent_reply(session, chat_id, viewer: Viewer, body, now: dt.datetime | None = None) -> ChatMessage:
    """An agent's answer to the visitor, by the viewer's employee. The caller commits."""
    now = now or utcnow()
    chat = visible_chat(session, chat_id, viewer)
    if viewer.employee_id is None:
        raise DomainError("Your login is not linked to an employee", status=403)
    text = _text("body", body, MAX_BODY, required=True)
    if chat.status == CHAT_CLOSED:
        raise DomainError("This chat is closed", field="body", status=409)
    if _count(session, chat) >= MAX_MESSAGES:
        raise DomainError("This chat has reached its limit of %(n)d messages", field="body", status=409,
                          n=MAX_MESSAGES)
    message = _say(session, chat, AGENT, text, now, employee_id=viewer.employee_id)
    session.flush()
    return message


def close(session, chat_id, viewer: Viewer) -> ChatSession:
    """Close a chat the viewer sees: the visitor can write no more. The caller commits."""
    chat = visible_chat(session, chat_id, viewer)
    chat.status = CHAT_CLOSED
    session.flush()
    return chat


def of_opportunity(session, opportunity_id: int) -> list[tuple[ChatSession, list[ChatMessage]]]:
    """Every chat of an opportunity with its messages, oldest first (the opportunity page's panel)."""
    chats = list(session.scalars(select(ChatSession).where(ChatSession.opportunity_id == opportunity_id)
                                 .order_by(ChatSession.started_at, ChatSession.id)))
    return [(chat, transcript(session, chat.id)) for chat in chats]
