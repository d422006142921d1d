"""SMS administration through the real app: channels (rules, encrypted secret never shown back),
templates (save rules as field errors, review workflow with its permission and audit, preview page and
API), sensitive-word import and test pages, the blacklist (service, masked list, import, API)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from app.models.audit import AuditLog
from app.models.sms import (
    APPROVED,
    BLOCK,
    DRAFT,
    MARKETING,
    MASK,
    NOTIFICATION,
    PENDING_REVIEW,
    REJECTED,
    BlacklistEntry,
    SensitiveWord,
    SmsAudienceEntry,
    SmsCampaign,
    SmsChannel,
    SmsMessage,
    SmsTemplate,
)
from app.services.errors import DomainError
from app.services.metadata import cache as metadata_cache
from app.services.sms import blacklist, secrets
from app.services.sms.templates import compose, render, segments
from tests.conftest import api_token, login
from tests.helpers import field_errors, flashes


# --- arrangements -------------------------------------------------------------------------------------
def make_channel(session, **values) -> SmsChannel:
    fields = {"name": "主通道", "provider": "sink", "signature": "学而思", "opt_out_text": "拒收请回复R"}
    channel = SmsChannel(**{**fields, **values})
    session.add(channel)
    session.commit()
    return channel


def make_template(session, channel, **values) -> SmsTemplate:
    fields = {
        "name": "开课提醒",
        "kind": NOTIFICATION,
        "body": "您好{name}，课程明天开始",
        "variables": "name",
        "channel": channel,
        "status": DRAFT,
    }
    tpl = SmsTemplate(**{**fields, **values})
    session.add(tpl)
    session.commit()
    return tpl


def count(session, model) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


CHANNEL_FORM = {
    "name": "营销通道",
    "provider": "sink",
    "signature": "学而思",
    "priority": "10",
    "rate_limit": "100",
    "batch_size": "100",
    "timeout_seconds": "10",
    "opt_out_text": "拒收请回复R",
    "price_per_segment": "0.045",
    "options": "",
}


# --- blacklist service ----------------------------------------------------------------------------------
def test_blacklist_add_is_idempotent_and_lookup_is_bulk(session):
    assert blacklist.add(session, "138 1234 5678", "asked", "manual") is True
    assert blacklist.add(session, "+8613812345678", "again", "inbound") is False
    session.commit()
    row = session.scalars(select(BlacklistEntry).where(BlacklistEntry.phone == "+8613812345678")).one()
    assert (row.reason, row.source) == ("asked", "manual")
    others = [f"+86139{n:08d}" for n in range(1200)]  # more than one lookup chunk
    blacklist.add(session, others[1100])
    session.commit()
    assert blacklist.is_blocked(session, ["+8613812345678", *others]) == {"+8613812345678", others[1100]}
    assert blacklist.is_blocked(session, []) == set()
    with pytest.raises(DomainError) as info:
        blacklist.add(session, "12345")
    assert info.value.field == "phone"


def test_blacklist_import_counts_and_line_errors(session):
    before = count(session, BlacklistEntry)
    result = blacklist.import_phones(
        session, "phone\n13812345678\n13812345678,dup\nnot-a-phone\n\n13912345678,投诉\n"
    )
    session.commit()
    assert (result.added, result.existing) == (2, 1)
    assert result.errors and result.errors[0][0] == 4
    assert count(session, BlacklistEntry) == before + 2
    again = blacklist.import_phones(session, "13812345678\n13912345678\n")
    assert (again.added, again.existing) == (0, 2)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("R", True),
        ("r", True),
        (" TD。", True),
        ("退订", True),
        ("退訂!", True),
        ("ＳＴＯＰ", True),
        ("Really?", False),
        ("我想了解课程", False),
        ("", False),
        (None, False),
    ],
)
def test_opt_out_keywords_default(text, expected):
    assert blacklist.is_opt_out(text) is expected


def test_opt_out_keywords_follow_the_config_item(session):
    from app.models.metadata import ConfigItem

    item = session.scalars(select(ConfigItem).where(ConfigItem.key == blacklist.CONFIG_KEY)).one()
    assert blacklist.is_opt_out("TD", session=session)
    item.value = '["QUIT", "不要再发"]'
    session.commit()
    metadata_cache.clear()
    assert blacklist.opt_out_keywords(session) == ("QUIT", "不要再发")
    assert blacklist.is_opt_out("quit", session=session)
    assert blacklist.is_opt_out("不要再发！", session=session)
    assert not blacklist.is_opt_out("TD", session=session)


# --- secrets ------------------------------------------------------------------------------------------
def test_secrets_round_trip_and_credentials(app):
    token = secrets.encrypt("s3cret", "key-one")
    assert "s3cret" not in token
    assert secrets.decrypt(token, "key-one") == "s3cret"
    assert secrets.decrypt(token, "another-key") is None  # rotated SECRET_KEY: unreadable, not a crash
    channel = SmsChannel(
        name="x",
        provider="http",
        signature="ab",
        access_key_env="SMS_KEY",
        secret_env="SMS_SECRET",
        encrypted_secret=token,
        callback_secret_env=None,
    )
    env = {"SMS_KEY": "kid", "SMS_SECRET": "from-env"}
    assert secrets.credentials(channel, "key-one", env) == secrets.Credentials("kid", "from-env", None)
    del env["SMS_SECRET"]
    assert secrets.credentials(channel, "key-one", env).secret == "s3cret"
    with app.app_context():  # default key: the app's SECRET_KEY
        assert secrets.decrypt(secrets.encrypt("abc")) == "abc"


# --- channels -----------------------------------------------------------------------------------------
@pytest.fixture
def admin(client):
    login(client, "admin")
    return client


def test_channel_secret_is_stored_encrypted_and_never_shown(app, admin, session):
    resp = admin.post(
        "/smschannelview/add", data={**CHANNEL_FORM, "new_secret": "top-secret-value"}, follow_redirects=True
    )
    assert resp.status_code == 200
    channel = session.scalars(select(SmsChannel).where(SmsChannel.name == "营销通道")).one()
    assert channel.encrypted_secret and "top-secret-value" not in channel.encrypted_secret
    with app.app_context():
        assert secrets.decrypt(channel.encrypted_secret) == "top-secret-value"
    for page in (
        f"/smschannelview/show/{channel.id}",
        f"/smschannelview/edit/{channel.id}",
        "/smschannelview/list/",
    ):
        html = admin.get(page).get_data(as_text=True)
        assert "top-secret-value" not in html and channel.encrypted_secret not in html
    assert ">set<" in admin.get(f"/smschannelview/show/{channel.id}").get_data(as_text=True).replace(" ", "")
    token = channel.encrypted_secret
    # an edit without a new secret keeps the stored one; "remove" clears it
    admin.post(f"/smschannelview/edit/{channel.id}", data={**CHANNEL_FORM, "priority": "5"})
    session.expire_all()
    assert (channel.priority, channel.encrypted_secret) == (5, token)
    admin.post(f"/smschannelview/edit/{channel.id}", data={**CHANNEL_FORM, "clear_secret": "y"})
    session.expire_all()
    assert channel.encrypted_secret is None
    assert channel.enabled is False  # an unticked box disables the channel (and is not "required")
    assert "notset" in admin.get(f"/smschannelview/show/{channel.id}").get_data(as_text=True).replace(" ", "")


@pytest.mark.parametrize(
    "changes, field, words",
    [
        ({"signature": "学"}, "signature", "2–12"),
        ({"signature": "一二三四五六七八九十一二三"}, "signature", "12"),
        ({"options": "{bad json"}, "options", "not valid JSON"),
        ({"options": "[1, 2]"}, "options", "JSON object"),
        ({"options": '{"fail_rate": 2}'}, "options", "fail_rate"),
        ({"options": '{"explode": true}'}, "options", "Unknown sink options"),
        ({"batch_size": "0"}, "batch_size", "from 1"),
        ({"opt_out_text": " "}, "opt_out_text", "opt-out"),
        ({"provider": "http", "base_url": "http://example.com"}, "base_url", "https"),
        ({"provider": "http", "base_url": "https://sms.example.com"}, "access_key_env", "key id"),
        (
            {"provider": "http", "base_url": "https://sms.example.com", "access_key_env": "SMS_KEY"},
            "secret_env",
            "secret",
        ),
        ({"secret_env": "lower-case"}, "secret_env", "environment variable"),
    ],
)
def test_channel_rules_are_field_errors_and_nothing_is_saved(admin, session, changes, field, words):
    before = count(session, SmsChannel)
    html = admin.post("/smschannelview/add", data={**CHANNEL_FORM, **changes}).get_data(as_text=True)
    errors = field_errors(html)
    assert field in errors and words in errors[field], errors
    assert count(session, SmsChannel) == before


def test_http_channel_with_env_credentials_saves_trimmed(admin, session):
    data = {
        **CHANNEL_FORM,
        "provider": "http",
        "base_url": "https://sms.example.com/",
        "signature": "【学而思】",
        "access_key_env": "SMS_KEY",
        "secret_env": "SMS_SECRET",
        "options": '{"region": "cn"}',
    }
    admin.post("/smschannelview/add", data=data)
    channel = session.scalars(select(SmsChannel).where(SmsChannel.name == "营销通道")).one()
    assert (channel.base_url, channel.signature, channel.encrypted_secret) == (
        "https://sms.example.com",
        "学而思",
        None,
    )


def test_channel_in_use_cannot_be_deleted(admin, session):
    channels = count(session, SmsChannel)
    channel = make_channel(session)
    make_template(session, channel)
    html = admin.post(f"/smschannelview/delete/{channel.id}", follow_redirects=True).get_data(as_text=True)
    assert any("disable it instead" in f for f in flashes(html))
    assert count(session, SmsChannel) == channels + 1


def test_templates_and_campaigns_with_messages_cannot_be_deleted(admin, session):
    """sms_message has no foreign keys: the console keeps its rows from losing their template or campaign."""
    channel = make_channel(session)
    template = make_template(session, channel)
    used = SmsCampaign(name="删除保护", template_id=template.id, channel_id=channel.id, status="completed",
                       audience='{"kind": "filter"}')
    draft = SmsCampaign(name="删除草稿", template_id=template.id, channel_id=channel.id, status="draft",
                        audience='{"kind": "list"}')
    session.add_all([used, draft])
    session.flush()
    session.add(SmsMessage(campaign_id=used.id, template_id=template.id, channel_id=channel.id,
                           phone="+8613800000001", content="x", status="sent"))
    session.add(SmsAudienceEntry(campaign_id=draft.id, line=1, phone="+8613800000002"))
    session.commit()
    used_id, draft_id, template_id = used.id, draft.id, template.id

    html = admin.post(f"/smstemplateview/delete/{template_id}", follow_redirects=True).get_data(as_text=True)
    assert any("is used by sms_campaign rows" in f for f in flashes(html))
    html = admin.post(f"/smscampaignview/delete/{used_id}", follow_redirects=True).get_data(as_text=True)
    assert any("cancel it instead" in f for f in flashes(html))
    admin.post(f"/smscampaignview/delete/{draft_id}")  # a draft goes, with its uploaded audience
    session.expire_all()
    assert session.get(SmsCampaign, draft_id) is None and session.get(SmsCampaign, used_id) is not None
    assert session.get(SmsTemplate, template_id) is not None
    assert not session.scalar(select(func.count()).select_from(SmsAudienceEntry)
                              .where(SmsAudienceEntry.campaign_id == draft_id))


# --- templates ----------------------------------------------------------------------------------------
def template_form(channel, **values) -> dict:
    return {
        "name": "新课推广",
        "kind": MARKETING,
        "channel": str(channel.id),
        "body": "{name}您好，新课上线拒收请回复R",
        "variables": "name",
        "event": "",
        **values,
    }


def test_template_add_rules_as_field_errors(admin, session):
    channel = make_channel(session)
    session.add(SensitiveWord(word="代开发票", action=BLOCK))
    session.commit()
    templates = count(session, SmsTemplate)
    cases = [
        ({"body": "{name}您好，新课上线"}, "body", "opt-out"),
        ({"variables": "name,city"}, "variables", "city"),
        ({"body": "{name}{city}拒收请回复R", "variables": "name,city"}, "body", "variables only"),
        ({"body": "{name}可代开發票拒收请回复R"}, "body", "代开发票"),
    ]
    for changes, field, words in cases:
        html = admin.post("/smstemplateview/add", data=template_form(channel, **changes)).get_data(
            as_text=True
        )
        errors = field_errors(html)
        assert field in errors and words in errors[field], (changes, errors)
    assert count(session, SmsTemplate) == templates
    admin.post("/smstemplateview/add", data=template_form(channel))
    tpl = session.scalars(select(SmsTemplate).where(SmsTemplate.channel_id == channel.id)).one()
    assert (tpl.status, tpl.kind, tpl.channel_id) == (DRAFT, MARKETING, channel.id)


def action(client, view: str, name: str, pk: int, **data):
    return client.post(
        f"/{view}/action_post", data={"action": name, "rowid": str(pk), **data}, follow_redirects=True
    )


def test_review_workflow_permissions_and_audit(app, client, session):
    channel = make_channel(session)
    tpl = make_template(session, channel)
    login(client, "marketing")
    action(client, "smstemplateview", "submit", tpl.id)
    session.expire_all()
    assert tpl.status == PENDING_REVIEW
    # Marketing writes templates but cannot approve
    resp = action(client, "smstemplateview", "approve", tpl.id)
    assert resp.status_code == 403
    session.expire_all()
    assert tpl.status == PENDING_REVIEW

    admin = app.test_client()
    admin.get("/lang/en")
    login(admin, "admin")
    action(admin, "smstemplateview", "approve", tpl.id)
    session.expire_all()
    assert (tpl.status, tpl.reviewed_by) == (APPROVED, "admin")
    logged = session.scalars(select(AuditLog).where(AuditLog.action == "sms_template_approve")).all()
    assert [(row.target_id, row.target_type) for row in logged] == [(str(tpl.id), "sms_template")]

    # approving again is refused with a message; editing the text sends it back to draft
    html = action(admin, "smstemplateview", "approve", tpl.id).get_data(as_text=True)
    assert any("only a pending template" in f for f in flashes(html))
    form = {
        "name": tpl.name,
        "kind": NOTIFICATION,
        "channel": str(channel.id),
        "body": "您好{name}，课程后天开始",
        "variables": "name",
        "event": "",
    }
    client.post(f"/smstemplateview/edit/{tpl.id}", data=form)
    session.expire_all()
    assert (tpl.status, tpl.body, tpl.reviewed_by) == (DRAFT, "您好{name}，课程后天开始", None)


def test_template_preview_page(admin, session):
    channel = make_channel(session)
    session.add(SensitiveWord(word="微信", action=MASK))
    session.commit()
    tpl = make_template(session, channel, body="您好{name}，加微信咨询" + "字" * 60)
    html = admin.get(f"/smstemplateview/preview/{tpl.id}?name=李雷").get_data(as_text=True)
    expected = compose(channel.signature, render(tpl.body, {"name": "李雷"}).replace("微信", "**"))
    assert expected in html
    assert f'id="sms-preview-length">{len(expected)}<' in html
    assert f'id="sms-preview-segments">{segments(expected)}<' in html and segments(expected) == 2
    assert "微信" in re.search(r'id="sms-preview-hits">(.*?)</p>', html, re.S).group(1)


# --- template API ---------------------------------------------------------------------------------------
def bearer(client, username):
    return {"Authorization": f"Bearer {api_token(client, username)}"}


def test_template_api_create_preview_and_review(client, session):
    templates = count(session, SmsTemplate)
    channel = make_channel(session)
    marketing = bearer(client, "marketing")
    bad = client.post(
        "/api/v1/sms_template/",
        headers=marketing,
        json={
            "name": "x",
            "kind": MARKETING,
            "channel": channel.id,
            "body": "{a}拒收请回复R",
            "variables": "a",
        },
    )
    assert bad.status_code == 422 and bad.get_json()["field"] == "body"
    assert count(session, SmsTemplate) == templates
    resp = client.post(
        "/api/v1/sms_template/",
        headers=marketing,
        json={
            "name": "验证码",
            "kind": "verification",
            "channel": channel.id,
            "body": "验证码{code}，5分钟内有效",
            "variables": "code",
        },
    )
    assert resp.status_code == 201, resp.get_json()
    pk = resp.get_json()["id"]
    shown = client.post(
        f"/api/v1/sms_template/{pk}/preview", headers=marketing, json={"sample": {"code": "4321"}}
    )
    text = compose(channel.signature, "验证码4321，5分钟内有效")
    assert shown.get_json() == {
        "text": text,
        "length": len(text),
        "segments": 1,
        "blocked": False,
        "hits": [],
        "values": {"code": "4321"},
    }
    draft = client.post(
        "/api/v1/sms_template/preview",
        headers=marketing,
        json={"body": "验证码{code}，详见 www.x.com", "kind": "verification", "variables": "code"},
    )
    assert draft.status_code == 422 and "links" in draft.get_json()["message"]

    assert (
        client.post(f"/api/v1/sms_template/{pk}/submit", headers=marketing).get_json()["status"]
        == PENDING_REVIEW
    )
    assert client.post(f"/api/v1/sms_template/{pk}/reject", headers=marketing, json={}).status_code == 403
    admin = bearer(client, "admin")
    resp = client.post(f"/api/v1/sms_template/{pk}/reject", headers=admin, json={"note": "签名不符"})
    assert resp.get_json() == {
        "id": pk,
        "status": REJECTED,
        "reviewed_by": "admin",
        "review_note": "签名不符",
    }
    again = client.post(f"/api/v1/sms_template/{pk}/approve", headers=admin, json={})
    assert again.status_code == 409
    session.expire_all()
    assert session.get(SmsTemplate, pk).status == REJECTED
    assert client.post("/api/v1/sms_template/999999/submit", headers=admin).status_code == 404


# --- sensitive words pages ----------------------------------------------------------------------------
def test_word_form_and_import_page(admin, session):
    # an unticked "allow-list" box sends nothing: the form must still save
    html = admin.post(
        "/sensitivewordview/add", data={"word": "--", "category": "", "action": BLOCK}
    ).get_data(as_text=True)
    assert "no letters or digits" in field_errors(html)["word"]
    admin.post("/sensitivewordview/add", data={"word": "刷单", "category": "fraud", "action": BLOCK})
    html = admin.post(
        "/sensitivewordview/add", data={"word": "刷单", "category": "", "action": MASK}
    ).get_data(as_text=True)
    assert "Already exists" in field_errors(html)["word"]  # FAB's unique check runs first
    assert count(session, SensitiveWord) == 1

    upload = "代开发票,fraud,block\n加微信,contact,mask\nbad,x,zap\n"
    html = admin.post("/sensitivewordview/import/", data={"text": upload, "category": ""}).get_data(
        as_text=True
    )
    result = re.sub(r"\s+", " ", re.search(r'id="sms-import-result">(.*?)</div>', html, re.S).group(1))
    assert "Added: <strong>2</strong>" in result and "Unchanged: <strong>0</strong>" in result
    assert count(session, SensitiveWord) == 3
    html = admin.post("/sensitivewordview/test/", data={"text": "加 微 信，可代開發票"}).get_data(
        as_text=True
    )
    assert "Blocked" in html and "* * *，可代開發票" in html


def test_marketing_reads_words_but_cannot_import(client, session):
    login(client, "marketing")
    assert client.get("/sensitivewordview/list/").status_code == 200
    client.post("/sensitivewordview/import/", data={"text": "刷单\n"})
    assert count(session, SensitiveWord) == 0


# --- blacklist pages and API --------------------------------------------------------------------------
def test_blacklist_list_masks_and_form_normalises(admin, session):
    admin.post("/blacklistview/add", data={"phone": "138 1234 5678", "reason": "投诉"})
    row = session.scalars(select(BlacklistEntry)).one()
    assert (row.phone, row.source) == ("+8613812345678", "manual")
    html = admin.post("/blacklistview/add", data={"phone": "+86 13812345678", "reason": ""}).get_data(
        as_text=True
    )
    assert "already on the blacklist" in field_errors(html)["phone"]
    html = admin.post("/blacklistview/add", data={"phone": "123", "reason": ""}).get_data(as_text=True)
    assert "phone" in field_errors(html)
    assert count(session, BlacklistEntry) == 1
    login(admin, "marketing")
    listing = admin.get("/blacklistview/list/").get_data(as_text=True)
    assert "13812345678" not in listing and "****" in listing


def test_blacklist_import_page_and_api(app, client, session):
    login(client, "marketing")
    html = client.post(
        "/blacklistview/import/",
        data={"text": "13812345678\n13912345678,complaint\nxx\n", "reason": "campaign"},
    ).get_data(as_text=True)
    result = re.sub(r"\s+", " ", re.search(r'id="sms-import-result">(.*?)</div>', html, re.S).group(1))
    assert "Added: <strong>2</strong>" in result and "<td>3</td>" in result
    reasons = dict(session.execute(select(BlacklistEntry.phone, BlacklistEntry.reason)).all())
    assert reasons == {"+8613812345678": "campaign", "+8613912345678": "complaint"}

    headers = bearer(client, "marketing")
    resp = client.post(
        "/api/v1/sms_blacklist/import",
        headers=headers,
        json={"phones": ["13812345678", "13712345678", "nope"], "reason": "api"},
    )
    body = resp.get_json()
    assert (body["added"], body["existing"], [e["line"] for e in body["errors"]]) == (1, 1, [3])
    lookup = client.post(
        "/api/v1/sms_blacklist/lookup", headers=headers, json={"phones": ["13712345678", "13612345678"]}
    ).get_json()
    assert lookup == {"blocked": ["13712345678"], "errors": []}
    listed = client.get("/api/v1/sms_blacklist/", headers=headers).get_json()["result"]
    assert len(listed) == 3 and all("****" in row["phone"] for row in listed)
    dup = client.post("/api/v1/sms_blacklist/", headers=headers, json={"phone": "13712345678", "reason": "x"})
    assert dup.status_code == 409 and dup.get_json()["field"] == "phone"
    assert count(session, BlacklistEntry) == 3
    other = app.test_client()  # no browser session: the token alone speaks
    denied = other.post(
        "/api/v1/sms_blacklist/import", headers=bearer(other, "sales11"), json={"phones": ["13512345678"]}
    )
    assert denied.status_code == 403
    assert count(session, BlacklistEntry) == 3
