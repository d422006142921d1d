"""Codes on screen as translated labels (app/views/labels.py), and the stored texts that are shown in the
reader's language: config item descriptions, the lead import's per-row errors, QA machine notes."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from sqlalchemy import select

from app.models.qa import QaInspection
from app.models.sales import LeadImport
from app.services.reference import SETTINGS
from app.views import labels
from tests.conftest import login


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
def test_every_label_exists_in_both_catalogs(app, locale):
    with app.test_request_context("/", headers={"Accept-Language": locale}):
        for kind, table in labels.KINDS.items():
            for code, english in table.items():
                text = labels.text(kind, code)
                assert text and f"{kind}." not in text, (kind, code)
                if locale == "en":
                    assert text == english, (kind, code)
                else:
                    assert not text.isascii() or text in ("JSON", "HTTP 网关"), (kind, code, text)
        # one code reads differently by kind: "pending" SMS vs inspection
        assert labels.text("sms_message.status", "pending") != labels.text("qa.status", "pending")
        assert labels.text("nothing.known", "x") == "x" and labels.label("qa.status", None) == ""


def test_the_jinja_filter_and_choices(app):
    with app.test_request_context("/", headers={"Accept-Language": "zh_CN"}):
        template = app.jinja_env.from_string(
            '{{ "running"|label("sms_campaign.status") }}|{{ "Admin"|role_name }}')
        assert template.render() == "发送中|系统管理员"
        assert [(c, str(n)) for c, n in labels.choices("qa.status")][0] == ("pending", "待质检")
        assert labels.formatters(status="job.status")["status"]("failed") == "失败"


def test_config_descriptions_are_shown_translated(app):
    client = app.test_client()
    login(client, "admin")
    zh = client.get("/configitemview/list/?psize_ConfigItemView=100").get_data(as_text=True)
    assert "允许发送营销短信" in zh and "Allow marketing SMS" not in zh
    client.get("/lang/en")
    en = client.get("/configitemview/list/?psize_ConfigItemView=100").get_data(as_text=True)
    assert "Allow marketing SMS" in en
    assert all(s.description for s in SETTINGS)


def test_lead_import_row_errors_read_in_the_readers_language(app, session):
    """The job stores the per-row problems in English; the page shows them in the reader's language."""
    from app.models.employee import CrmUser

    owner = session.scalar(select(CrmUser.id).where(CrmUser.username == "backoffice1"))
    record = LeadImport(filename="bad.csv", sha256="x" * 64, total_rows=3, error_rows=3, created_by_id=owner,
                        errors=json.dumps([
        {"line": 2, "errors": {"phone": "required", "product_line": "unknown or disabled option 'xx'"}},
        {"line": 3, "errors": {"name": "at most 64 characters"}},
        {"line": 4, "errors": {"phone": "'12' is not a phone number"}},
                        ]))
    session.add(record)
    session.commit()
    client = app.test_client()
    login(client, "backoffice1")
    zh = unescape(client.get(f"/leadimportview/show/{record.id}").get_data(as_text=True))
    assert "必填" in zh and "未知或已停用的选项 'xx'" in zh and "最多 64 个字符" in zh
    assert "'12' 不是电话号码" in zh
    assert "required" not in zh and "unknown or disabled option" not in zh
    client.get("/lang/en")
    en = unescape(client.get(f"/leadimportview/show/{record.id}").get_data(as_text=True))
    assert "unknown or disabled option 'xx'" in en and "at most 64 characters" in en


def test_stored_messages_fall_back_to_the_stored_text(app):
    with app.test_request_context("/", headers={"Accept-Language": "zh_CN"}):
        assert labels.stored_message("something nobody declared") == "something nobody declared"
        assert labels.stored_message("at most 5 characters") == "最多 5 个字符"
        assert labels.stored_message(None) == ""


def test_qa_machine_notes_never_print_none_or_an_empty_list(app, session):
    """Demo rows carry only "passed": the page says what is known, in Chinese."""
    inspection = session.scalar(select(QaInspection).order_by(QaInspection.id))
    items = list(inspection.scorecard.items)
    inspection.machine_results = json.dumps({str(it.id): {"kind": it.kind, "passed": False, "value": None,
                                                          "missing": [], "hits": []} for it in items})
    session.commit()
    client = app.test_client()
    login(client, "qa1")
    html = client.get(f"/qainspectionview/show/{inspection.id}").get_data(as_text=True)
    assert "None" not in html.replace("display: none", "")
    assert "缺少必说词：<" not in html and "缺少必说词：\n" not in html


def test_qa_pending_is_not_sms_pending(app):
    client = app.test_client()
    login(client, "qa1")
    html = client.get("/qainspectionview/list/").get_data(as_text=True)
    assert "待发送" not in html


def test_confirmation_dialog_speaks_the_readers_language(app):
    client = app.test_client()
    login(client, "admin")
    html = client.get("/employeeview/list/").get_data(as_text=True)
    modal = html[html.find('id="modal-confirm"'):]
    modal = modal[:modal.find("</a>") + 4]
    assert "取消" in modal and "确定" in modal and ">Cancel<" not in modal and ">OK<" not in modal


def test_sms_campaign_page_names_its_fields_and_statuses(app, session):
    from tests.factories import SMS_CAMPAIGN

    campaign = SMS_CAMPAIGN.create(session, status="running", created_by="marketing")
    session.commit()
    client = app.test_client()
    login(client, "marketing")
    show = client.get(f"/smscampaignview/show/{campaign.id}").get_data(as_text=True)
    assert "Cursor" not in show and "Prepared" not in show and "Created By" not in show
    assert labels.KINDS["sms_campaign.status"][campaign.status] not in show
    listing = client.get("/smscampaignview/list/").get_data(as_text=True)
    assert "Cursor" not in listing and "Created By" not in listing
    progress = client.get(f"/smscampaignview/progress/{campaign.id}").get_data(as_text=True)
    assert f">{campaign.status}<" not in progress


def test_call_record_names_the_call_line(app):
    from app.extensions import db
    from app.models.calls import CallRecord

    with app.app_context():
        call_id = db.session.scalar(select(CallRecord.id).where(CallRecord.line_id.isnot(None)))
    client = app.test_client()
    login(client, "admin")
    html = client.get(f"/callrecordview/show/{call_id}").get_data(as_text=True)
    assert "行号" not in html and "外呼线路" in html


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_call_records_show_the_result_as_its_label(app, session, lang):
    from tests.factories import CALL_RECORD

    calls = {code: CALL_RECORD.create(session, result=code, status="ended")
             for code in ("normal_clearing", "user_busy", "no_answer")}
    session.commit()
    client = app.test_client()
    login(client, "admin")
    client.get("/lang/zh_CN" if lang == "zh" else "/lang/en")
    pages = [client.get("/callrecordview/list/?psize_CallRecordView=100").get_data(as_text=True)]
    pages += [client.get(f"/callrecordview/show/{c.id}").get_data(as_text=True) for c in calls.values()]
    # Codes only as the values of the search dropdown's options (what the filter compares), never as text.
    pages = [re.sub(r'value=\\?"[^"\\]*\\?"', "", html) for html in pages]
    for code in calls:
        assert not any(code in unescape(html) for html in pages), code
        with app.test_request_context("/", headers={"Accept-Language": "en" if lang == "en" else "zh_CN"}):
            assert labels.text("call.result", code) in pages[0]


def test_every_crud_view_names_its_pages_in_both_languages(app):
    """No page title falls back to FAB's English "Add Xyz" / "Edit Xyz": each is a translated msgid."""
    from flask_appbuilder.baseviews import BaseCRUDView
    from flask_babel import LazyString

    titles = ("list_title", "show_title", "add_title", "edit_title")
    views = [v for v in app.appbuilder.baseviews if isinstance(v, BaseCRUDView)]
    assert len(views) > 20
    plain = {(type(v).__name__, t): getattr(v, t) for v in views for t in titles
             if not isinstance(getattr(v, t), LazyString)}
    assert not plain
    with app.test_request_context("/", headers={"Accept-Language": "zh_CN"}):
        untranslated = {(type(v).__name__, t): str(getattr(v, t)) for v in views for t in titles
                        if str(getattr(v, t)).isascii() and type(v).__module__.startswith("app.")}
    assert not untranslated


@pytest.mark.parametrize(("lang", "titles"), [
    ("zh", ("新增群发任务", "编辑群发任务")), ("en", ("Add SMS campaign", "Edit SMS campaign"))])
def test_sms_campaign_form_titles(app, session, lang, titles):
    from tests.factories import SMS_CAMPAIGN

    campaign = SMS_CAMPAIGN.create(session, status="draft", created_by="marketing")
    session.commit()
    client = app.test_client()
    login(client, "marketing")
    client.get("/lang/zh_CN" if lang == "zh" else "/lang/en")
    add = client.get("/smscampaignview/add").get_data(as_text=True)
    edit = client.get(f"/smscampaignview/edit/{campaign.id}").get_data(as_text=True)
    assert titles[0] in add and "Add Sms Campaign" not in add
    assert titles[1] in edit and "Edit Sms Campaign" not in edit


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_coded_column_is_searched_by_a_dropdown_of_its_labels(app, session, lang):
    """The search form offers a status by its label; the filter compares the stored code."""
    import re

    from app.models.sales import OWNED, POOLED
    from tests import factories as f

    owned = f.OPPORTUNITY.create(session, status=OWNED)
    pooled = f.OPPORTUNITY.create(session, status=POOLED, pool_id=f.POOL.create(session).id)
    session.commit()
    client = app.test_client()
    login(client, "admin")
    client.get("/lang/zh_CN" if lang == "zh" else "/lang/en")
    html = client.get("/opportunityview/list/").get_data(as_text=True)
    # FAB's search widget carries each field's HTML as a JSON string in the page's script.
    fields = [json.loads(m.group(1)) for m in re.finditer(r'"status": ("(?:[^"\\]|\\.)*")', html)]
    select = next((m for m in (re.search(r'<select[^>]*name="status".*?</select>', f, re.S) for f in fields)
                   if m), None)
    assert select, "status is searched by a text box"
    with app.test_request_context("/", headers={"Accept-Language": "en" if lang == "en" else "zh_CN"}):
        shown = labels.text("opportunity.status", POOLED)
    assert re.search(rf'<option[^>]*value="{POOLED}"[^>]*>{re.escape(str(escape_html(shown)))}</option>',
                     select.group(0)), select.group(0)[:500]
    listed = client.get(f"/opportunityview/list/?_flt_3_status={POOLED}").get_data(as_text=True)
    assert f"/opportunityview/show/{pooled.id}\"" in listed
    assert f"/opportunityview/show/{owned.id}\"" not in listed


def escape_html(text: str) -> str:
    from markupsafe import escape

    return escape(text)
