"""Demo landing pages: one published page with a lead form and the chat widget, and one draft.

Idempotent: a page that exists (by slug) is left as the marketer may have edited it; only a campaign
found since (the campaigns' demo runs before this one) is attached to a page that has none.
"""

from __future__ import annotations

from sqlalchemy import select

from app.models.marketing import LandingPage, MarketingCampaign
from app.models.metadata import DictItem, DictType
from app.services import landing

#: tracking codes the demo page's campaign may have, the first found wins
CAMPAIGN_CODES = ("k12-math-trial", "k12_math_trial", "k12-math-seo", "k12_math_seo", "k12-math", "k12_math")

K12_CONTENT = """## 为什么选择我们的数学试听课
- 一对一学情诊断，找到薄弱知识点
- 名师直播互动，课堂即时答疑
- 课后练习与学习报告，家长随时掌握进度

## 试听课安排
填写下方表单后，课程顾问会在 24 小时内联系您，为孩子安排合适的试听时间。

试听完全免费，不满意不收费。"""

PAGES = [
    {
        "slug": "k12-math-trial",
        "title": "K12数学免费试听课_名师直播一对一诊断",
        "keywords": "K12数学,小学数学,初中数学,数学试听课,数学辅导",
        "description": "K12数学名师直播课免费试听：一对一学情诊断，找准薄弱点，"
                       "课后练习和学习报告帮助孩子稳步提分。立即预约，课程顾问24小时内联系您。",
        "heading": "K12 数学免费试听课",
        "content": K12_CONTENT,
        "product_line": "k12_math",
        "chat_enabled": True,
        "published": True,
    },
    {
        "slug": "adult-english-spring",
        "title": "成人英语春季班_职场英语口语提升",
        "keywords": "成人英语,职场英语,英语口语",
        "description": "成人英语春季班：外教小班直播，职场场景口语练习。"
                       "草稿：发布前请补充课程安排与价格说明。",
        "heading": "成人英语春季班",
        "content": "## 课程亮点\n- 外教小班直播\n- 职场场景练习",
        "product_line": "adult_english",
        "chat_enabled": False,
        "published": False,
    },
]


def _product_line(session, code: str) -> DictItem | None:
    return session.scalar(select(DictItem).join(DictItem.dict_type)
                          .where(DictType.code == "product_line", DictItem.code == code))


def _campaign(session) -> MarketingCampaign | None:
    """The demo campaign of the K12 maths page: one with a matching tracking code, else none."""
    for code in CAMPAIGN_CODES:
        found = session.scalar(select(MarketingCampaign).where(MarketingCampaign.code == code))
        if found is not None:
            return found
    return None


def seed_demo(session) -> dict:
    """Add the demo landing pages that are missing (through the page rules); commits.
    Returns {"landing_pages": added, "landing_campaigns": campaigns attached}."""
    added = attached = 0
    for spec in PAGES:
        line = _product_line(session, spec["product_line"])
        if line is None:
            continue
        campaign = _campaign(session) if spec["slug"] == "k12-math-trial" else None
        page = session.scalar(select(LandingPage).where(LandingPage.slug == spec["slug"]))
        if page is None:
            values = {k: v for k, v in spec.items() if k != "product_line"}
            page = LandingPage(**values, product_line_id=line.id,
                               campaign_id=campaign.id if campaign is not None else None)
            landing.prepare_save(session, page, creating=True)
            session.add(page)
            added += 1
        elif page.campaign_id is None and campaign is not None:
            page.campaign_id = campaign.id
            attached += 1
    session.commit()
    return {"landing_pages": added, "landing_campaigns": attached}
