"""Behind a reverse proxy (TRUSTED_PROXIES=1) the per-address limits count the client's address from
X-Forwarded-For; without it (the default) that header is ignored, so a client cannot choose the address it
is limited by."""

from __future__ import annotations

import pytest

from tests.test_capture import URL, body, make_page, token_for

PROXY = "10.0.0.2"


def send(client, token: str, n: int, forwarded_for: str):
    return client.post(URL, json=body(token, phone=f"1370000{n:04d}"), environ_base={"REMOTE_ADDR": PROXY},
                       headers={"X-Forwarded-For": forwarded_for, "Accept-Language": "en"})


@pytest.mark.config(CRM_CAPTURE_IP_LIMIT="2 per minute", TRUSTED_PROXIES=1)
def test_behind_a_trusted_proxy_each_visitor_has_a_limit_of_their_own(app, session):
    token, client = token_for(make_page(session)), app.test_client()
    statuses = [send(client, token, n, f"198.51.100.{n}").status_code for n in range(6)]
    assert statuses == [201] * 6  # six visitors through one proxy: one post each
    flood = [send(client, token, 100 + n, "198.51.100.99").status_code for n in range(3)]
    assert flood == [201, 201, 429]


@pytest.mark.config(CRM_CAPTURE_IP_LIMIT="2 per minute")
def test_without_trusted_proxies_a_forged_forwarded_for_changes_nothing(app, session):
    token, client = token_for(make_page(session)), app.test_client()
    statuses = [send(client, token, n, f"198.51.100.{n}").status_code for n in range(3)]
    assert statuses == [201, 201, 429]  # all counted against the address that connected
