"""Template rules: rendering, segments, the save checks (variables both ways, all-variable bodies,
opt-out text, verification codes and links, length, blocked words) and preview."""

from __future__ import annotations

import pytest

from app.models.sms import (
    BLOCK,
    MARKETING,
    MASK,
    NOTIFICATION,
    VERIFICATION,
    SensitiveWord,
    SmsChannel,
    SmsTemplate,
)
from app.services.errors import DomainError
from app.services.sms.templates import (
    MAX_BODY,
    check_template,
    check_values,
    compose,
    preview,
    render,
    segments,
)

CHANNEL = SmsChannel(name="c", signature="学而思", opt_out_text="拒收请回复R")


def tpl(body, variables=None, kind=NOTIFICATION, channel=CHANNEL):
    return SmsTemplate(name="t", body=body, variables=variables, kind=kind, channel=channel)


def error(template, session=None) -> DomainError:
    with pytest.raises(DomainError) as info:
        check_template(template, session=session)
    return info.value


def test_render_and_missing_variable():
    rendered = render("您好{name}，课程{course}明天开始", {"name": "张三", "course": 7})
    assert rendered == "您好张三，课程7明天开始"
    with pytest.raises(DomainError) as info:
        render("您好{name}", {})
    assert info.value.field == "variables" and "name" in info.value.message


@pytest.mark.parametrize("length, expected", [(0, 1), (1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (500, 8)])
def test_segments(length, expected):
    assert segments("字" * length) == expected


def test_compose_puts_the_signature_first():
    assert compose("学而思", "hi") == "【学而思】hi"
    assert compose(None, "hi") == "hi"


def test_valid_templates_pass():
    check_template(tpl("您好{name}，您的课程{course}明天开始", "name, course"))
    check_template(tpl("新课上线，{name}快来试听拒收请回复R", "name", kind=MARKETING))
    check_template(tpl("验证码{code}，5分钟内有效", "code", kind=VERIFICATION))


@pytest.mark.parametrize("body, variables, field, words", [
    ("您好{name}", "", "body", "undeclared"),
    ("您好{name}", "name,city", "variables", "not used"),
    ("您好{name}", "name,1bad", "variables", "Not a variable name"),
    ("您好{name}", "name,name", "variables", "twice"),
    ("{name}，{course}", "name,course", "body", "variables only"),
    ("", None, "body", "Enter"),
    ("字" * (MAX_BODY + 1), None, "body", "at most"),
    ("课程提醒，拒收请回复R", None, "body", "must not end"),
])
def test_notification_rules(body, variables, field, words):
    exc = error(tpl(body, variables))
    assert exc.field == field and words in exc.message


def test_marketing_needs_the_channels_opt_out_text():
    exc = error(tpl("新课上线", kind=MARKETING))
    assert exc.field == "body" and "拒收请回复R" in exc.message
    other = SmsChannel(name="d", signature="abc", opt_out_text="回T退订")
    check_template(tpl("新课上线回T退订", kind=MARKETING, channel=other))
    assert error(tpl("新课上线拒收请回复R", kind=MARKETING, channel=other)).field == "body"
    # the opt-out text does not count as content
    exc = error(tpl("{name}拒收请回复R", "name", kind=MARKETING))
    assert "variables only" in exc.message


def test_verification_rules():
    assert "{code}" in error(tpl("您的验证码{num}", "num", kind=VERIFICATION)).message
    for link in ("https://x.cn/a", "www.abc.com", "abc.com/login"):
        exc = error(tpl(f"验证码{{code}}，登录{link}", "code", kind=VERIFICATION))
        assert "links" in exc.message
    template = tpl("验证码{code}", "code", kind=VERIFICATION)
    check_values(template, {"code": "1234"})
    check_values(template, {"code": "a1b2c3"})
    for bad in ("123", "1234567", "12 34", ""):
        with pytest.raises(DomainError):
            check_values(template, {"code": bad})


def test_blocked_words_refuse_the_save(session):
    session.add_all([SensitiveWord(word="代开发票", action=BLOCK),
                     SensitiveWord(word="微信", action=MASK)])
    session.commit()
    exc = error(tpl("您好{name}，可代开發票", "name"), session=session)
    assert exc.field == "body" and "代开发票" in exc.message
    check_template(tpl("您好{name}，加微信咨询", "name"), session=session)  # masked words may stay
    # a variable between the characters does not form the word: literals are checked apart
    check_template(tpl("代开{x}发票", "x"), session=session)


def test_preview_renders_counts_and_masks(session):
    session.add(SensitiveWord(word="微信", action=MASK))
    session.commit()
    template = tpl("您好{name}，加微信{wx}咨询", "name,wx")
    result = preview(template, {"name": "李雷"}, session=session)
    assert result.values == {"name": "李雷", "wx": "[wx]"}
    assert result.text == "【学而思】您好李雷，加**[wx]咨询"
    assert result.length == len(result.text)
    assert result.segments == 1 and result.hits == ["微信"] and not result.blocked
    long = preview(tpl("通知" + "字" * 80), session=session)
    assert long.length == len("【学而思】") + 82 and long.segments == 2
    code = preview(tpl("验证码{code}", "code", kind=VERIFICATION))
    assert code.text == "【学而思】验证码123456"


def test_review_workflow_is_a_service_command_with_its_audit(app, session):
    """Submit and review without a request (as a CLI or a job would): the state moves, the reviewer and
    note are kept, every step is audited, and a refused step changes nothing."""
    from sqlalchemy import select

    from app.models.audit import AuditLog
    from app.models.sms import APPROVED, DRAFT, PENDING_REVIEW
    from app.services.sms import templates
    from tests import factories as f

    tpl = f.SMS_TEMPLATE.create(session)
    with pytest.raises(DomainError) as refused:
        templates.review(session, tpl, True, actor="qa")
    assert (refused.value.status, tpl.status) == (409, DRAFT)
    session.rollback()
    templates.submit(session, tpl)
    assert tpl.status == PENDING_REVIEW
    templates.review(session, tpl, True, "  looks fine  ", actor="reviewer")
    session.commit()
    assert (tpl.status, tpl.reviewed_by, tpl.review_note) == (APPROVED, "reviewer", "looks fine")
    actions = session.scalars(select(AuditLog.action).where(AuditLog.target_type == "sms_template",
                                                            AuditLog.target_id == str(tpl.id))
                              .order_by(AuditLog.id)).all()
    # the review's own events, after the row's creation (captured like every configuration change)
    assert actions == ["create", "sms_template_submit", "sms_template_approve"]
    tpl.body = "{name}您好，新课开讲。拒收请回复R"  # a content change needs a new review
    templates.prepare_save(session, tpl, creating=False)
    assert (tpl.status, tpl.reviewed_by, tpl.review_note) == (DRAFT, None, None)
