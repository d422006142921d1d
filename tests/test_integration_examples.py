"""Issue 13 item 7: the examples of README "Inbound integrations" work as written.

The section's Python blocks run, in order, in one namespace, and its bash blocks (curl, openssl,
sha256sum) run in bash, both against the real app served over HTTP on a loopback port, with the keys and
secrets in the environment as the section says. Every status they print is 2xx and their effect is in the
database; a forged or stale signature made with the section's own helper is refused. The section's table
lists exactly the inbound endpoints of the OpenAPI document, and its test vector is what the CRM computes.

Reads README.md (or the Markdown file named by INTEGRATION_EXAMPLES_FILE, to try a section before it is
merged); skipped, saying why, while README.md has no such section.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from app.models.commerce import Order, Product
from app.models.sales import Customer, Lead
from app.models.sms import SmsChannel, SmsTemplate
from app.services import seed_landing
from app.services.signing import sign_callback
from app.views import openapi_inbound
from tests import factories
from tests.conftest import api_token
from tests.helpers import without_faketime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADING = "Inbound integrations"
SOURCE = "INTEGRATION_EXAMPLES_FILE"
SKU = "K12-MATH-TERM"  # the demo's product the shop examples sell (app.services.seed_commerce)
STATUS_LINE = re.compile(r"^(\d{3}) ", re.M)


def section() -> str | None:
    """The text under the heading, up to the next heading of its level or above (outside code blocks)."""
    path = os.environ.get(SOURCE) or os.path.join(ROOT, "README.md")
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines(keepends=True)
    level, kept, fenced = None, [], False
    for line in lines:
        fenced ^= line.startswith("```")
        heading = None if fenced else re.match(r"(#{1,6}) (.*?)\s*$", line)
        if level is None:
            if heading and heading.group(2) == HEADING:
                level = len(heading.group(1))
            continue
        if heading and len(heading.group(1)) <= level:
            break
        kept.append(line)
    return None if level is None else "".join(kept)


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


@pytest.fixture
def doc() -> str:
    text = section()
    if text is None:
        pytest.skip(f'README.md has no "{HEADING}" section yet (or set {SOURCE} to a Markdown file with it)')
    return text


@pytest.fixture
def server(app):
    """The app over real HTTP on a free loopback port (the examples use urllib and curl)."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(5)


def _key(app, role: str, username: str) -> str:
    sm = app.appbuilder.sm
    user = sm.add_user(username, "System", role, f"{username}@example.com", sm.find_role(role),
                       factories.PASSWORD)
    return sm.create_api_key(user, username)["key"]


@pytest.fixture
def integration_env(doc, app, session, server, monkeypatch):
    """The environment the examples read, and the data they assume: the demo's landing page and product
    (`make run` seeds them; the suite's template database has the core demo only), and an approved
    template for the notification event they raise (an administrator's set-up)."""
    seed_landing.seed_demo(session)  # idempotent: the demo's pages, when the template has none yet
    if session.scalar(select(Product).where(Product.code == SKU)) is None:
        line = factories.reference_item(session, "product_line", "k12_math")
        session.add(Product(code=SKU, name="K12 数学 学期课", product_line_id=line.id, list_price=2980))
    if session.scalar(select(SmsTemplate).where(SmsTemplate.event == "class_reminder",
                                                SmsTemplate.status == "approved")) is None:
        channel = session.scalar(select(SmsChannel).where(SmsChannel.provider == "sink").limit(1))
        session.add(SmsTemplate(name="上课提醒", kind="notification", channel_id=channel.id,
                                body="{name}您好，{course}将于{start}开课", variables="name,course,start",
                                status="approved", event="class_reminder"))
    session.commit()
    env = {"CRM_URL": server,
           "CRM_API_KEY": _key(app, "Lead Integration", "partner-system"),
           "CRM_HR_API_KEY": _key(app, "HR Integration", "hr-system"),
           "CRM_NOTIFY_API_KEY": _key(app, "Notification Integration", "class-system"),
           "SHOP_WEBHOOK_SECRET": app.config["SHOP_WEBHOOK_SECRET"],
           "LEARNING_API_SECRET": app.config["LEARNING_API_SECRET"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _statuses(output: str) -> list[int]:
    return [int(code) for code in STATUS_LINE.findall(output)]


# --- the section and the document --------------------------------------------------------------------
def test_the_table_lists_the_inbound_endpoints_of_the_document(doc, app):
    token = api_token(app.test_client(), "admin")
    spec = app.test_client().get("/api/v1/_openapi", headers={"Authorization": f"Bearer {token}"}).get_json()
    lines = doc[doc.index("\n|") + 1:].splitlines()
    table = "\n".join(lines[:next((n for n, line in enumerate(lines) if not line.startswith("|")), None)])
    listed = set()
    for verbs, path in re.findall(r"`((?:GET|POST)(?:`/`(?:GET|POST))*) (/api/v1/[^`]+)`", table):
        for verb in verbs.split("`/`"):
            listed.add((re.sub(r"<([^>]+)>", r"{\1}", path), verb.lower()))
    served = set(openapi_inbound.served(spec))
    assert served and served <= listed, f"in the document, not in the README table: {served - listed}"
    assert listed <= {(p, v) for p, ops in spec["paths"].items() for v in ops}, \
        f"in the README table, not served: {listed - served}"


def test_the_test_vector_is_what_the_crm_computes_and_what_openssl_prints(doc):
    found = re.search(r"secret `([^`]+)`, timestamp `(\d+)`, nonce `([^`]+)`, body `([^`]+)`.*?"
                      r"signature `([0-9a-f]{64})`", doc, re.S)
    assert found, "the section states its test vector"
    secret, timestamp, nonce, body, signature = found.groups()
    assert sign_callback(secret, timestamp, nonce, body.encode()) == signature
    recipe = next(b for b in blocks(doc, "bash") if secret in b and "curl" not in b)
    if not all(shutil.which(tool) for tool in ("bash", "openssl", "sha256sum")):
        pytest.skip("bash, openssl and sha256sum are needed to run the recipe")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe], capture_output=True, text=True,
                         env=without_faketime(dict(os.environ)), timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == signature


# --- the examples, run ---------------------------------------------------------------------------------
def test_the_python_examples_work_against_the_app(doc, app, session, integration_env, traveller):
    namespace: dict = {"__name__": "readme_example"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for code in blocks(doc, "python"):
            exec(compile(code, "README.md (Inbound integrations)", "exec"), namespace)  # noqa: S102
    output = printed.getvalue()
    statuses = _statuses(output)
    assert len(statuses) >= 8 and all(200 <= s < 300 for s in statuses), output

    session.expire_all()
    lead = session.scalar(select(Lead).where(Lead.client_key.like("%:partner-lead-20261202-0001")))
    assert lead is not None and lead.opportunity is not None
    customer = session.scalar(select(Customer).where(Customer.registered_user_id == "u-10086"))
    assert customer is not None
    order = session.scalar(select(Order).where(Order.number == "SO-20261202-0001"))
    assert order is not None and order.status == "paid" and order.customer_id == customer.id

    # The section's helper, with the wrong secret, or once its timestamp is stale: 401, nothing applied.
    send, signed_headers = namespace["send"], namespace["signed_headers"]
    secret = integration_env["SHOP_WEBHOOK_SECRET"]
    event = {**namespace["event"], "event_id": "evt-forged"}
    body = json.dumps(event).encode()
    forged = signed_headers("not-the-secret", body, "X-Shop")
    status, answer = send("POST", "/api/v1/shop/webhook", body, forged)
    assert (status, answer["field"]) == (401, "X-Shop-Signature")
    headers = signed_headers(secret, body, "X-Shop")
    traveller.shift(dt.timedelta(seconds=app.config["CRM_SIGNATURE_WINDOW_SECONDS"] + 5))
    status, answer = send("POST", "/api/v1/shop/webhook", body, headers)
    assert (status, answer["field"]) == (401, "X-Shop-Timestamp")
    # a repeat inside the window is harmless: the same event answers "duplicate"
    again = json.dumps(namespace["event"], ensure_ascii=False).encode()
    status, answer = send("POST", "/api/v1/shop/webhook", again, signed_headers(secret, again, "X-Shop"))
    assert (status, answer["outcome"]) == (200, "duplicate")


def test_the_curl_examples_work_against_the_app(doc, session, integration_env, tmp_path):
    if not all(shutil.which(tool) for tool in ("bash", "curl", "openssl", "sha256sum", "date")):
        pytest.skip("bash, curl, openssl, sha256sum and date are needed to run the curl examples")
    # `date` as the examples call it, on the test's clock (the app's), not the machine's
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "date").write_text(f'#!/bin/sh\nexec {shutil.which("date")} -d @{int(time.time())} "$@"\n')
    (shim / "date").chmod(0o755)
    env = {**without_faketime(dict(os.environ)), **integration_env,
           "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}
    examples = [b for b in blocks(doc, "bash") if "curl" in b]
    assert len(examples) >= 3
    for script in examples:
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                             env=env, timeout=60)
        assert out.returncode == 0, f"{script}\n--> {out.stdout}\n{out.stderr}"
        answer = json.loads(out.stdout.strip().splitlines()[-1])
        assert "message" not in answer, answer
    session.expire_all()
    assert session.scalar(select(Order).where(Order.number == "SO-20261202-0002")) is not None
    lead = session.scalar(select(Lead).where(Lead.client_key.like("%:partner-lead-20261202-0002")))
    assert lead is not None
