"""Reference data: the dictionaries and config items the product needs to work, part of every deploy.

`sync_reference` (the deploy step `flask crm sync-reference`) creates what is missing and leaves alone
what exists: labels, order, enabled flags and config values belong to the administrators once they are
in the database. Run it on every deploy (it is idempotent); a release that adds a dictionary item or a
config key adds it here. Demo organisation, people and activity are another matter (app.services.seed).

Every config key the code reads is declared here once, with its type and default; code reading a key
takes the default from `default(key)` instead of repeating it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import func, select

from app.models.metadata import ConfigItem, DictItem, DictType
from app.services.metadata import parse_config_value

# --- dictionaries -----------------------------------------------------------------------------------
LEAD_SOURCE, INTENTION_LEVEL, PRODUCT_LINE = "lead_source", "intention_level", "product_line"
LOST_REASON, FOLLOWUP_TYPE, OPPORTUNITY_STAGE = "lost_reason", "followup_type", "opportunity_stage"
EMPLOYEE_LEVEL = "employee_level"
MARKETING_CHANNEL = "marketing_channel"

#: (type code, name zh, name en) → [(item code, label zh, label en)] in their order.
DICTIONARIES = {
    (LEAD_SOURCE, "线索来源", "Lead source"): [
        ("web_form", "官网表单", "Website form"), ("douyin", "抖音", "Douyin"),
        ("baidu", "百度推广", "Baidu ads"), ("wechat", "微信", "WeChat"),
        ("referral", "转介绍", "Referral"), ("offline", "线下活动", "Offline event"),
        # Public lead capture (app.services.capture): the landing-page form and the chat widget.
        ("landing_page", "落地页", "Landing page"), ("chat", "在线咨询", "Online chat"),
    ],
    (INTENTION_LEVEL, "意向等级", "Intention level"): [
        ("A", "A 高意向", "A - high"), ("B", "B 中意向", "B - medium"),
        ("C", "C 低意向", "C - low"), ("D", "D 无意向", "D - none"),
    ],
    (PRODUCT_LINE, "产品线", "Product line"): [
        ("k12_math", "K12 数学", "K12 Maths"), ("k12_english", "K12 英语", "K12 English"),
        ("adult_english", "成人英语", "Adult English"), ("programming", "少儿编程", "Kids coding"),
    ],
    (LOST_REASON, "丢单原因", "Lost reason"): [
        ("price", "价格太高", "Price too high"), ("competitor", "选择竞品", "Chose a competitor"),
        ("no_need", "没有需求", "No need"), ("unreachable", "联系不上", "Unreachable"),
        # A paid order refunded (app.services.orders): the won opportunity is lost again.
        ("refunded", "已退款", "Refunded"),
    ],
    # "call": the type of the follow-up a connected call records (app.services.calls.callbacks).
    (FOLLOWUP_TYPE, "跟进方式", "Follow-up type"): [
        ("call", "电话", "Phone call"), ("wechat", "微信", "WeChat"), ("sms", "短信", "SMS"),
        ("visit", "面谈", "Meeting"),
    ],
    # "new": a new opportunity's stage; "won" and "lost" close it; "trial" is exempt from recycling by
    # default (CirculationRule.exempt_stages).
    (OPPORTUNITY_STAGE, "商机阶段", "Opportunity stage"): [
        ("new", "新建", "New"), ("contacted", "已联系", "Contacted"), ("interested", "有意向", "Interested"),
        ("trial", "试听", "Trial"), ("negotiating", "谈判", "Negotiating"), ("won", "赢单", "Won"),
        ("lost", "输单", "Lost"),
    ],
    (EMPLOYEE_LEVEL, "员工职级", "Employee level"): [
        ("P1", "P1 初级", "P1 Junior"), ("P2", "P2 中级", "P2 Intermediate"),
        ("P3", "P3 高级", "P3 Senior"), ("M1", "M1 主管", "M1 Lead"), ("M2", "M2 经理", "M2 Manager"),
    ],
    # A marketing campaign's channel (app.models.marketing.MarketingCampaign.channel_id).
    (MARKETING_CHANNEL, "营销渠道", "Marketing channel"): [
        ("search_ads", "搜索广告", "Search ads"), ("feed_ads", "信息流广告", "Feed ads"),
        ("seo", "自然搜索", "SEO"), ("content", "内容营销", "Content"), ("chat", "在线咨询", "Online chat"),
        ("referral", "转介绍", "Referral"), ("offline", "线下活动", "Offline event"),
        ("other", "其他", "Other"),
    ],
}


# --- config items -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """A config key: its type, its default (typed; a duration as text such as "3d"), what it does."""

    key: str
    value_type: str
    default: object
    description: str

    @property
    def raw(self) -> str:
        """The default as a ConfigItem stores it."""
        if self.value_type == "json":
            return json.dumps(self.default, ensure_ascii=False)
        if self.value_type == "bool":
            return "true" if self.default else "false"
        return str(self.default)


SETTINGS = (
    # Read by nothing yet (circulation rules carry their own days): kept for the installs that have them.
    Setting("circulation.idle_days", "int", 7, "Days without follow-up before an opportunity is recycled"),
    Setting("circulation.protect_period", "duration", "3d", "Protection period after a claim"),
    Setting("sms.marketing_enabled", "bool", True, "Allow marketing SMS"),
    # Read by the code:
    Setting("dispatch.working_hours", "json", {"start": "09:00", "end": "21:00"},
            "Dispatch working hours, in the business time zone (setting BUSINESS_TIMEZONE)"),
    Setting("dispatch.fallback_pool", "str", "",
            "Pool (by name) for opportunities no dispatch rule can place; empty: they wait"),
    Setting("leads.duplicate_policy", "str", "sticky",
            "sticky: a repeat lead joins the open opportunity; reject"),
    Setting("sms.opt_out_keywords", "json",
            ["R", "TD", "T", "N", "退订", "退", "STOP", "UNSUBSCRIBE", "QX", "取消", "拒收"],
            "Inbound replies that opt the sender out of SMS (whole reply, case and punctuation ignored)"),
    Setting("sms.frequency_limits", "json",
            {"verification": {"minute": 1, "hour": 5, "day": 10}, "default": {"day": 50}},
            "SMS per phone and window (minute/hour/day) by template kind; \"default\" for the others"),
    Setting("sms.quiet_hours", "json", {"start": "08:00", "end": "21:00", "recipient_zone": True},
            "Marketing SMS only in this window, in the recipient's time zone (recipient_zone) or the "
            "business one"),
    Setting("sms.notifications_skip_blacklisted", "bool", False,
            "Event notifications skip blacklisted numbers, as marketing does"),
    Setting("sms.notifications_ignore_blacklist", "bool", False,
            "Campaigns of notification templates send to blacklisted numbers too"),
    Setting("calls.max_daily_attempts", "int", 5,
            "Click-to-call: maximum dials to one callee per business day"),
    Setting("inbox.read_retention_days", "int", 90,
            "Notifications read more than this many days ago are deleted by the nightly maintenance job"),
    Setting("calls.line_busy_minutes", "int", 30,
            "Click-to-call: minutes without a status callback after which a call no longer holds a line "
            "channel"),
    Setting("commerce.approval_below_percent", "int", 80,
            "An order whose final price is below this percentage of its list price waits for a manager's "
            "approval"),
    Setting("hr.resignation_policy", "str", "manager",
            "Where a resigned person's open opportunities go when HR sync reports the resignation: manager "
            "(their manager), team_pool (their team's public pool) or dispatch (back to the dispatch "
            "engine)"),
    Setting("capture.per_phone_per_hour", "int", 5,
            "Public lead capture: posts accepted per phone number per hour (landing pages and chat)"),
    Setting("capture.form_token_minutes", "int", 120,
            "Public lead capture: minutes a landing page's form (its signed token) stays valid"),
    Setting("scoring.variables", "json", ["source", "campaign", "product_line", "region", "intention_level",
                                          "stage", "follow_ups", "calls", "learning", "tags"],
            "Win probability: the variables the model learns from (Opportunities › Win Probability)"),
    Setting("scoring.min_history", "int", 40,
            "Win probability: closed (won or lost) opportunities needed before a model is trained"),
    Setting("dispatch.conversion_days", "int", 90,
            "Score-aware dispatch: the days of closed opportunities a salesperson's conversion rate counts"),
)
_BY_KEY = {s.key: s for s in SETTINGS}


def setting(key: str) -> Setting:
    """The declaration of a config key (KeyError for a key nobody declared: declare it above)."""
    return _BY_KEY[key]


def declared(key: str) -> bool:
    return key in _BY_KEY


def default(key: str):
    """The typed default of a config key (a fresh copy: callers may change it)."""
    s = _BY_KEY[key]
    return parse_config_value(s.value_type, s.raw)


# --- the deploy step --------------------------------------------------------------------------------
def sync_reference(session) -> dict[str, list[str]]:
    """Add the dictionary types, items and config items that are missing; change nothing that exists.

    Returns what was added ({"dict_types": [...], "dict_items": ["type.code", ...], "config_items":
    [...]}); flushes, the caller commits. Changes are audited (app.services.audit) as `sync-reference`.
    """
    from app.services import audit

    added: dict[str, list[str]] = {"dict_types": [], "dict_items": [], "config_items": []}
    with audit.acting_as(None, "sync-reference"):
        types = {t.code: t for t in session.scalars(select(DictType))}
        for (code, name_zh, name_en), items in DICTIONARIES.items():
            dtype = types.get(code)
            if dtype is None:
                dtype = DictType(code=code, name_zh=name_zh, name_en=name_en)
                session.add(dtype)
                session.flush()
                added["dict_types"].append(code)
            of_type = DictItem.dict_type_id == dtype.id
            have = set(session.scalars(select(DictItem.code).where(of_type)))
            sort = session.scalar(select(func.max(DictItem.sort)).where(of_type)) or 0
            for item_code, label_zh, label_en in items:
                if item_code in have:
                    continue
                sort += 1  # after what is there: an administrator's order stays as it is
                session.add(DictItem(dict_type_id=dtype.id, code=item_code, label_zh=label_zh,
                                     label_en=label_en, sort=sort, enabled=True))
                added["dict_items"].append(f"{code}.{item_code}")
        keys = set(session.scalars(select(ConfigItem.key)))
        for s in SETTINGS:
            if s.key not in keys:
                session.add(ConfigItem(key=s.key, value_type=s.value_type, value=s.raw,
                                       description=s.description))
                added["config_items"].append(s.key)
        session.flush()
    return added
