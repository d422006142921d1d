"""The chat widget's auto-reply: a small scripted bot that greets, answers a few common questions, and
asks for the visitor's name, then their phone, in the visitor's language (zh / en).

It keeps no state of its own: what it has learnt (name, phone) and what it asks next are read again from
the transcript each time (`read_transcript`), so a reply depends only on the messages so far. It never
creates the lead: once it has both, the widget posts them to the one public lead endpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.models.marketing import AGENT, BOT, VISITOR
from app.security.masking import mask_phone, mask_phones_in_text
from app.services.errors import DomainError
from app.services.phones import normalise_phone

LANGS = ("zh", "en")
NAME_MAX = 64  # Lead.name

# What the bot says, in both languages. Bodies are stored as said (the transcript is in the visitor's
# language, whoever reads it later).
TEXTS = {
    "greet": {"zh": "您好！我是课程顾问助手，请问有什么可以帮您？",
              "en": "Hello! I'm the course assistant. How can I help you?"},
    "price": {"zh": "课程价格取决于课程和课时包，顾问会把当前的优惠发给您。",
              "en": "Prices depend on the course and the package; an advisor will send you our offers."},
    "trial": {"zh": "我们提供免费试听课，顾问会和您约一个合适的时间。",
              "en": "Yes, we offer a free trial lesson; an advisor will book a time that suits you."},
    "schedule": {"zh": "课程均为线上授课，工作日和周末都有灵活的上课时间。",
                 "en": "Lessons are online, with flexible times on weekdays and at weekends."},
    "teacher": {"zh": "我们的老师都有教师资格证和多年教学经验。",
                "en": "Our teachers are certified and have years of teaching experience."},
    "other": {"zh": "好的，课程顾问会为您详细解答。",
              "en": "Thank you for your question; a course advisor will answer it in detail."},
    "ask_name": {"zh": "请问怎么称呼您？", "en": "May I have your name?"},
    "ask_phone": {"zh": "%(name)s，请留下您的手机号，方便顾问联系您。",
                  "en": "Thank you, %(name)s. What phone number can our advisor call you on?"},
    "bad_phone": {"zh": "这个号码好像不正确，请再输入一次手机号。",
                  "en": "That does not look like a phone number. Please type it again."},
    "done": {"zh": "谢谢！我们已记下您的联系方式，顾问会尽快联系您。",
             "en": "Thank you! We have your details; an advisor will contact you soon."},
    "after": {"zh": "收到，顾问会尽快回复您。", "en": "Noted; an advisor will get back to you soon."},
}

# Topics the bot answers, by keyword (first match wins).
TOPICS = (
    ("price", ("价格", "多少钱", "费用", "收费", "学费", "price", "cost", "fee", "how much")),
    ("trial", ("试听", "体验", "免费", "trial", "free", "demo")),
    ("schedule", ("时间", "上课", "几点", "schedule", "when", "time")),
    ("teacher", ("老师", "师资", "teacher", "tutor")),
)
CJK = re.compile(r"[\u3400-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")
PHONE_LIKE = re.compile(r"\+?\d[\d\s-]{5,18}\d")
NAME_PREFIXES = re.compile(
    r"^(我叫|我是|我姓|名字是|我的名字是|my name is|name is|name:|i am|i'm|this is)\s*", re.IGNORECASE)


def say(key: str, lang: str, **params) -> str:
    text = TEXTS[key][lang if lang in LANGS else "zh"]
    return text % params if params else text


def language_of(text: str) -> str | None:
    """zh when the text has Chinese characters, en when it has Latin letters only; else None."""
    if CJK.search(text):
        return "zh"
    return "en" if LATIN.search(text) else None


def find_phone(text: str) -> str | None:
    """The first valid phone number written in `text`, as E.164 (a national number read as Chinese)."""
    for candidate in PHONE_LIKE.findall(text):
        try:
            return normalise_phone(re.sub(r"[\s-]", "", candidate))
        except DomainError:
            continue
    return None


def mask_phones(text: str) -> str:
    """`text` with every phone number in it masked, as the bot reads them too (spaces and dashes in it)."""
    def masked(match) -> str:
        phone = find_phone(match.group(0))
        return mask_phone(phone) if phone else match.group(0)

    return mask_phones_in_text(PHONE_LIKE.sub(masked, text or "")) or ""


def _name_from(text: str) -> str | None:
    name = NAME_PREFIXES.sub("", text.strip()).strip(" .,!。，！~")
    if not name or PHONE_LIKE.fullmatch(name):
        return None
    return name[:NAME_MAX]


@dataclass
class BotState:
    """What the bot has learnt from the transcript, and what it asks next."""

    lang: str = "zh"
    name: str | None = None
    phone: str | None = None
    asked: str | None = None  # "name" / "phone" / None: what the last reply asked for
    visitor_messages: int = 0
    agent_joined: bool = False

    @property
    def complete(self) -> bool:
        return bool(self.name and self.phone)

    def contact(self) -> dict:
        return {"name": self.name, "phone": self.phone, "complete": self.complete}


def greeting_language(body: str) -> str:
    return "en" if body == TEXTS["greet"]["en"] else "zh"


def start_language(lang) -> str:
    """The language of a new chat: zh / en from the widget (zh-CN, en-US … accepted), else zh."""
    if isinstance(lang, str) and lang[:2].lower() in LANGS:
        return lang[:2].lower()
    return "zh"


def step(state: BotState, text: str) -> str:
    """Read one visitor message into `state`; answer the bot's reply to it (in the chat's language)."""
    first = state.visitor_messages == 0
    state.visitor_messages += 1
    if first:
        state.lang = language_of(text) or state.lang
    lang = state.lang
    replies: list[str] = []
    if first:
        topic = next((key for key, words in TOPICS if any(w in text.lower() for w in words)), "other")
        replies.append(say(topic, lang))
    was_complete = state.complete
    phone = find_phone(text)
    if phone and not state.phone:
        state.phone = phone
    elif state.asked == "name" and not state.name:
        state.name = _name_from(text)
    elif state.asked == "phone" and not state.phone:
        replies.append(say("bad_phone", lang))
        return _joined(replies, lang)
    if state.complete:
        state.asked = None
        replies.append(say("after" if was_complete else "done", lang))
    elif not state.name:
        state.asked = "name"
        replies.append(say("ask_name", lang))
    else:
        state.asked = "phone"
        replies.append(say("ask_phone", lang, name=state.name))
    return _joined(replies, lang)


def _joined(replies: list[str], lang: str) -> str:
    return ("" if lang == "zh" else " ").join(replies)


def read_transcript(messages, lang: str = "zh") -> BotState:
    """The bot's state after `messages` (ChatMessage rows in order): replays the visitor's messages."""
    state = BotState(lang=lang)
    for message in messages:
        if message.sender == BOT and state.visitor_messages == 0 and message.body in (
                TEXTS["greet"]["zh"], TEXTS["greet"]["en"]):
            state.lang = greeting_language(message.body)
        elif message.sender == AGENT:
            state.agent_joined = True
        elif message.sender == VISITOR:
            step(state, message.body)
    return state
