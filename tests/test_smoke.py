from tests.conftest import login


def test_admin_sees_every_page(client):
    assert login(client, "admin").status_code == 302
    for url in ["/", "/orgunitview/list/", "/employeeview/list/", "/dicttypeview/list/",
                "/dictitemview/list/", "/configitemview/list/", "/roledatascopeview/list/",
                "/auditlogview/list/", "/users/list/", "/roles/list/", "/api/v1/_openapi", "/swagger/v1"]:
        assert client.get(url).status_code == 200, url


def test_anonymous_is_sent_to_login(client):
    resp = client.get("/employeeview/list/")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
