"""The HTTP provider against a real HTTP server on 127.0.0.1 that checks signatures and answers per number."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.models.sms import SmsChannel, new_uid
from app.services.sms.http import (
    H_KEY,
    H_NONCE,
    H_SIGNATURE,
    H_TIMESTAMP,
    SEND_PATH,
    HttpProvider,
    callback_headers,
    check_base_url,
)
from app.services.sms.providers import OutboundSms, ProviderError, ReceiptError

KEY_ID, SECRET, CALLBACK_SECRET = "AKID-test", "s3cret-for-tests", "cb-secret"
BAD_NUMBER, BUSY_NUMBER, SILENT_NUMBER = "+8613900000001", "+8613900000002", "+8613900000003"


class FakeCloud:
    """A stand-in for the provider: verifies the signature like the real service and records requests."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answered: list[int] = []  # the status of every answer given, in order
        self.hold = threading.Event()  # "slow" answers only once the test sets it
        self.mode = "normal"  # normal / slow / broken
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                timestamp, nonce = self.headers.get(H_TIMESTAMP), self.headers.get(H_NONCE)
                text = "\n".join(("POST", self.path, timestamp or "", nonce or "",
                                  hashlib.sha256(body).hexdigest()))
                expected = hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
                signed = (self.headers.get(H_KEY) == KEY_ID
                          and hmac.compare_digest(expected, self.headers.get(H_SIGNATURE, "")))
                cloud.requests.append({"path": self.path, "signed": signed, "body": json.loads(body)})
                if cloud.mode == "slow":
                    cloud.hold.wait(30)
                if cloud.mode == "broken":
                    return self._answer(503, {"code": "SystemBusy"})
                if not signed:
                    return self._answer(401, {"code": "SignatureDoesNotMatch"})
                if self.path != SEND_PATH:
                    return self._answer(404, {"code": "NotFound"})
                results = []
                for m in json.loads(body)["messages"]:
                    if m["phone"] == BAD_NUMBER:
                        results.append({"id": m["id"], "code": "InvalidPhone", "message": "bad number"})
                    elif m["phone"] == BUSY_NUMBER:
                        results.append({"id": m["id"], "code": "Throttled"})
                    elif m["phone"] != SILENT_NUMBER:
                        results.append({"id": m["id"], "code": "OK", "message_id": "pm-" + m["id"][:8]})
                self._answer(200, {"code": "OK", "request_id": "r1", "results": results})

            def _answer(self, status, payload):
                cloud.answered.append(status)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cloud():
    with FakeCloud() as server:
        yield server


def provider(cloud, secret=SECRET, timeout=5.0):
    return HttpProvider(cloud.url, KEY_ID, secret, "测试签名", callback_secret=CALLBACK_SECRET,
                        timeout=timeout)


def outbound(*phones):
    return [OutboundSms(uid=new_uid(), phone=p, content=f"【测试签名】您好 {p}") for p in phones]


def test_batch_is_signed_and_answered_per_number_with_our_uid_as_correlation(cloud):
    good = "+8613800000001"
    batch = outbound(good, BAD_NUMBER, BUSY_NUMBER, SILENT_NUMBER)
    results = provider(cloud).send_batch(batch)

    assert len(cloud.requests) == 1 and cloud.requests[0]["signed"]
    sent = cloud.requests[0]["body"]
    assert sent["sign_name"] == "测试签名"
    assert [(m["id"], m["phone"], m["content"]) for m in sent["messages"]] == \
        [(m.uid, m.phone, m.content) for m in batch]
    by_uid = {r.uid: r for r in results}
    assert [r.uid for r in results] == [m.uid for m in batch]
    ok = by_uid[batch[0].uid]
    assert ok.ok and ok.provider_id == "pm-" + batch[0].uid[:8]
    bad = by_uid[batch[1].uid]
    assert (bad.ok, bad.error_code, bad.retryable) == (False, "InvalidPhone", False)
    busy = by_uid[batch[2].uid]
    assert (busy.ok, busy.error_code, busy.retryable) == (False, "Throttled", True)
    silent = by_uid[batch[3].uid]
    assert (silent.ok, silent.error_code, silent.retryable) == (False, "missing_result", True)


def test_wrong_secret_is_refused_and_not_retried(cloud):
    with pytest.raises(ProviderError) as err:
        provider(cloud, secret="not-the-secret").send_batch(outbound("+8613800000001"))
    assert "401" in str(err.value) and err.value.retryable is False
    assert cloud.requests[0]["signed"] is False


def test_timeout_and_server_errors_are_retryable(cloud):
    cloud.mode = "slow"
    answered = len(cloud.answered)
    with pytest.raises(ProviderError) as err:
        provider(cloud, timeout=0.3).send_batch(outbound("+8613800000001"))
    assert err.value.retryable is True and "timed out" in str(err.value)
    # it gave up on its own timeout while the provider still held its answer
    assert len(cloud.answered) == answered
    cloud.hold.set()

    cloud.mode = "broken"
    with pytest.raises(ProviderError) as err:
        provider(cloud).send_batch(outbound("+8613800000001"))
    assert err.value.retryable is True and "503" in str(err.value)


def test_unreachable_provider_is_retryable(cloud):
    url = cloud.url
    cloud.server.shutdown()
    cloud.server.server_close()
    with pytest.raises(ProviderError) as err:
        HttpProvider(url, KEY_ID, SECRET, "测试签名", timeout=1).send_batch(outbound("+8613800000001"))
    assert err.value.retryable is True


def test_empty_batch_makes_no_request(cloud):
    assert provider(cloud).send_batch([]) == []
    assert cloud.requests == []


@pytest.mark.parametrize("url,ok", [
    ("https://sms.example.com/", True), ("http://127.0.0.1:8080", True), ("http://localhost:9", True),
    ("http://[::1]:9", True), ("http://sms.example.com", False), ("ftp://127.0.0.1", False), ("", False),
])
def test_base_url_must_be_https_unless_local(url, ok):
    if ok:
        assert check_base_url(url) == url.rstrip("/")
    else:
        with pytest.raises(ValueError):
            check_base_url(url)


def _callback(payload, secret=CALLBACK_SECRET, now=None):
    body = json.dumps(payload).encode()
    return body, callback_headers(secret, body, now=now)


def test_receipts_are_verified_and_parsed(cloud):
    body, headers = _callback({"receipts": [
        {"id": "u1", "message_id": "p1", "phone": "+8613800000001", "status": "DELIVRD",
         "time": "2026-11-25T08:00:00+08:00"},
        {"id": "u2", "status": "UNDELIVERED", "code": "MK:0001"},
        {"message_id": "p3", "status": "SENT"},
    ]})
    receipts = provider(cloud).parse_receipts(body, {k.lower(): v for k, v in headers.items()})
    assert [(r.correlation, r.status, r.error_code) for r in receipts] == [
        ("u1", "delivered", None), ("u2", "failed", "MK:0001"), ("p3", "sent", None)]
    assert receipts[0].at.isoformat() == "2026-11-25T00:00:00" and receipts[0].phone == "+8613800000001"


@pytest.mark.parametrize("case", ["bad_signature", "stale", "no_headers", "unknown_status", "not_json",
                                  "empty", "not_objects"])
def test_bad_callbacks_raise_receipt_error(cloud, case):
    payload = {"receipts": [{"id": "u1", "status": "DELIVERED"}]}
    body, headers = _callback(payload)
    if case == "bad_signature":
        headers = callback_headers("wrong", body)
    elif case == "stale":
        headers = callback_headers(CALLBACK_SECRET, body, now=time.time() - 3600)
    elif case == "no_headers":
        headers = {}
    elif case == "unknown_status":
        body, headers = _callback({"receipts": [{"id": "u1", "status": "MAYBE"}]})
    elif case == "not_json":
        body = b"<xml/>"
        headers = callback_headers(CALLBACK_SECRET, body)
    elif case == "empty":
        body, headers = _callback({"receipts": []})
    elif case == "not_objects":
        body, headers = _callback({"receipts": ["u1"]})
    with pytest.raises(ReceiptError):
        provider(cloud).parse_receipts(body, headers)


def test_inbound_replies_are_verified_and_parsed(cloud):
    body, headers = _callback({"replies": [{"phone": "+8613800000001", "text": "TD"}]})
    replies = provider(cloud).parse_inbound(body, headers)
    assert [(r.phone, r.text) for r in replies] == [("+8613800000001", "TD")]
    body, headers = _callback({"replies": [{"text": "TD"}]})
    with pytest.raises(ReceiptError):
        provider(cloud).parse_inbound(body, headers)


def test_from_channel_reads_credentials_from_the_named_env_vars(cloud, monkeypatch):
    channel = SmsChannel(name="cloud", provider="http", signature="测试签名", base_url=cloud.url,
                         access_key_env="T_SMS_KEY", secret_env="T_SMS_SECRET",
                         callback_secret_env="T_SMS_CB", timeout_seconds=3)
    monkeypatch.delenv("T_SMS_KEY", raising=False)
    with pytest.raises(ProviderError) as err:
        HttpProvider.from_channel(channel)
    assert err.value.retryable is False
    monkeypatch.setenv("T_SMS_KEY", KEY_ID)
    monkeypatch.setenv("T_SMS_SECRET", SECRET)
    monkeypatch.setenv("T_SMS_CB", CALLBACK_SECRET)
    adapter = HttpProvider.from_channel(channel)
    assert adapter.send_batch(outbound("+8613800000001"))[0].ok
    assert adapter.callback_secret == CALLBACK_SECRET and adapter.timeout == 3


def test_from_channel_falls_back_on_the_encrypted_secret_and_refuses_plain_http(cloud, monkeypatch):
    from app.services.sms.secrets import encrypt

    monkeypatch.setenv("T_SMS_KEY", KEY_ID)
    monkeypatch.delenv("T_SMS_SECRET", raising=False)
    channel = SmsChannel(name="cloud", provider="http", signature="测试签名", base_url=cloud.url,
                         access_key_env="T_SMS_KEY", secret_env="T_SMS_SECRET",
                         encrypted_secret=encrypt(SECRET, "app-secret-key"))
    assert HttpProvider.from_channel(channel, "app-secret-key").send_batch(outbound("+8613800000001"))[0].ok
    assert cloud.requests[-1]["signed"]
    channel.base_url = "http://sms.example.com"
    with pytest.raises(ProviderError) as err:
        HttpProvider.from_channel(channel, "app-secret-key")
    assert err.value.retryable is False and "https" in str(err.value)
