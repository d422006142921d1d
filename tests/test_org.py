"""OrgUnit tree through the real pages and REST API: materialised paths on create and move, subtree
queries after a move, and every refusal (cycle, duplicate sibling name, delete in use, bad kind) with its
clear error and nothing changed in the database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.models.org import OrgUnit
from app.security.scope import subtree_unit_ids
from tests import factories
from tests.conftest import login
from tests.helpers import field_errors, flashes


# --- helpers ----------------------------------------------------------------------------------------
def tree_rows(session) -> dict[int, tuple]:
    """Every unit as the database has it now: id → (name, parent_id, path, depth)."""
    session.expire_all()
    rows = session.execute(select(OrgUnit.id, OrgUnit.name, OrgUnit.parent_id, OrgUnit.path, OrgUnit.depth))
    return {r.id: (r.name, r.parent_id, r.path, r.depth) for r in rows}


def expected_paths(rows: dict[int, tuple]) -> dict[int, tuple[str, int]]:
    """Path and depth of every unit derived from the parent links alone."""
    def path(uid):
        parent = rows[uid][1]
        return (path(parent) if parent else "/") + f"{uid}/"

    return {uid: (path(uid), path(uid).count("/") - 2) for uid in rows}


def subtree(session, unit_id: int) -> set[int]:
    path = session.scalar(select(OrgUnit.path).where(OrgUnit.id == unit_id))
    return set(session.scalars(subtree_unit_ids(path)))


def by_code(session, code: str) -> OrgUnit:
    return session.scalar(select(OrgUnit).where(OrgUnit.code == code))


def form_data(unit_or_none=None, **values) -> dict:
    """The edit form as the browser posts it: the unit's current values, overridden by `values`."""
    data = {"name": "", "code": "", "kind": "team", "parent": "__None", "sort": "0"}
    if unit_or_none is not None:
        u = unit_or_none
        data.update(name=u.name, code=u.code or "", kind=u.kind,
                    parent=str(u.parent_id) if u.parent_id else "__None", sort=str(u.sort))
    data.update({k: ("__None" if k == "parent" and v is None else str(v)) for k, v in values.items()})
    return data


@pytest.fixture
def chain(session):
    """A → B → C → D under HQ (company › division › department › team) and a separate E under HQ."""
    hq = by_code(session, "HQ")
    a = factories.org_unit(session, "Chain A", hq, kind="division")
    b = factories.org_unit(session, "Chain B", a, kind="department")
    c = factories.org_unit(session, "Chain C", b, kind="team")
    d = factories.org_unit(session, "Chain D", c, kind="team")
    e = factories.org_unit(session, "Chain E", hq, kind="division")
    return {"hq": hq.id, "a": a.id, "b": b.id, "c": c.id, "d": d.id, "e": e.id}


def assert_paths_consistent(session) -> dict[int, tuple]:
    rows = tree_rows(session)
    want = expected_paths(rows)
    assert {uid: (r[2], r[3]) for uid, r in rows.items()} == want
    return rows


# --- create -----------------------------------------------------------------------------------------
def test_four_level_tree_created_through_form_and_api_has_right_paths(client, session):
    login(client, "admin")
    resp = client.post("/orgunitview/add", data=form_data(name="Acme Group", code="ACME", kind="company"))
    assert resp.status_code == 302, field_errors(resp.text)
    company = by_code(session, "ACME")
    assert (company.parent_id, company.path, company.depth) == (None, f"/{company.id}/", 0)

    resp = client.post("/api/v1/org_unit/", json={"name": "Acme Sales", "code": "ACME-S", "kind": "division",
                                                   "parent": company.id})
    assert resp.status_code == 201, resp.get_json()
    division_id = resp.get_json()["id"]

    resp = client.post("/orgunitview/add", data=form_data(name="Acme K12", code="ACME-K12", kind="department",
                                                          parent=division_id))
    assert resp.status_code == 302, field_errors(resp.text)
    department = by_code(session, "ACME-K12")

    resp = client.post("/api/v1/org_unit/",
                       json={"name": "Acme K12 Team 1", "code": "ACME-T1", "kind": "team",
                             "parent": department.id})
    assert resp.status_code == 201, resp.get_json()
    team_id = resp.get_json()["id"]

    rows = assert_paths_consistent(session)
    assert rows[team_id][2] == f"/{company.id}/{division_id}/{department.id}/{team_id}/"
    assert [rows[i][3] for i in (company.id, division_id, department.id, team_id)] == [0, 1, 2, 3]
    # The API reports what the database holds.
    shown = client.get(f"/api/v1/org_unit/{team_id}").get_json()["result"]
    assert (shown["path"], shown["depth"]) == (rows[team_id][2], 3)
    assert subtree(session, company.id) == {company.id, division_id, department.id, team_id}


# --- move -------------------------------------------------------------------------------------------
def test_move_subtree_through_form_rewrites_descendants(client, session, chain):
    before = tree_rows(session)
    login(client, "admin")
    b = session.get(OrgUnit, chain["b"])
    resp = client.post(f"/orgunitview/edit/{b.id}", data=form_data(b, parent=chain["e"]))
    assert resp.status_code == 302, field_errors(resp.text)

    rows = assert_paths_consistent(session)
    e_path = rows[chain["e"]][2]
    assert rows[chain["b"]][1:] == (chain["e"], f"{e_path}{chain['b']}/", 2)
    assert rows[chain["c"]][2:] == (f"{e_path}{chain['b']}/{chain['c']}/", 3)
    assert rows[chain["d"]][2:] == (f"{e_path}{chain['b']}/{chain['c']}/{chain['d']}/", 4)
    moved = {chain["b"], chain["c"], chain["d"]}
    # Nothing outside the moved subtree changed.
    assert {k: v for k, v in rows.items() if k not in moved} == {
        k: v for k, v in before.items() if k not in moved}
    assert subtree(session, chain["b"]) == moved
    assert subtree(session, chain["e"]) == moved | {chain["e"]}
    assert subtree(session, chain["a"]) == {chain["a"]}
    assert subtree(session, chain["hq"]) == {uid for uid, r in rows.items()
                                             if r[2].startswith(rows[chain["hq"]][2])}


def test_move_subtree_through_api_rewrites_descendants(client, session, chain):
    login(client, "admin")
    # C (with D below it) goes from under B to directly under HQ: depth shrinks by one.
    resp = client.put(f"/api/v1/org_unit/{chain['c']}", json={"parent": chain["hq"]})
    assert resp.status_code == 200, resp.get_json()
    rows = assert_paths_consistent(session)
    hq_path = rows[chain["hq"]][2]
    assert rows[chain["c"]][2:] == (f"{hq_path}{chain['c']}/", 1)
    assert rows[chain["d"]][2:] == (f"{hq_path}{chain['c']}/{chain['d']}/", 2)
    assert subtree(session, chain["c"]) == {chain["c"], chain["d"]}
    assert subtree(session, chain["a"]) == {chain["a"], chain["b"]}

    # And to the top level (no parent): the subtree becomes a root.
    resp = client.put(f"/api/v1/org_unit/{chain['c']}", json={"parent": None})
    assert resp.status_code == 200, resp.get_json()
    rows = assert_paths_consistent(session)
    assert rows[chain["d"]][2:] == (f"/{chain['c']}/{chain['d']}/", 1)
    assert subtree(session, chain["c"]) == {chain["c"], chain["d"]}
    assert chain["c"] not in subtree(session, chain["hq"])


# --- refusals ---------------------------------------------------------------------------------------
CYCLE = "cannot be moved under itself or one of its own sub-units"


@pytest.mark.parametrize("target", ["a", "c", "d"])
def test_cycle_refused_in_form_with_parent_field_error(client, session, chain, target):
    before = tree_rows(session)
    login(client, "admin")
    a = session.get(OrgUnit, chain["a"])
    resp = client.post(f"/orgunitview/edit/{a.id}", data=form_data(a, parent=chain[target]))
    assert resp.status_code == 200
    errors = field_errors(resp.text)
    assert CYCLE in errors.get("parent", ""), errors
    assert tree_rows(session) == before


@pytest.mark.parametrize("target", ["a", "b", "d"])
def test_cycle_refused_by_api_with_422_on_parent(client, session, chain, target):
    before = tree_rows(session)
    login(client, "admin")
    resp = client.put(f"/api/v1/org_unit/{chain['a']}", json={"parent": chain[target]})
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["field"] == "parent" and CYCLE in body["message"]
    assert tree_rows(session) == before


def test_duplicate_sibling_name_refused_case_insensitively(client, session, chain):
    before = tree_rows(session)
    login(client, "admin")
    # "Chain C" exists under B: "chain c" and "CHAIN C " are the same name.
    resp = client.post("/orgunitview/add", data=form_data(name="chain c", code="DUP1", parent=chain["b"]))
    assert resp.status_code == 200
    assert "already has a sub-unit named" in field_errors(resp.text).get("name", "")

    resp = client.post("/api/v1/org_unit/",
                       json={"name": "CHAIN C ", "code": "DUP2", "kind": "team", "parent": chain["b"]})
    assert resp.status_code == 422
    assert resp.get_json()["field"] == "name"

    # Renaming a sibling onto it, and moving a same-named unit next to it, are refused too.
    other = factories.org_unit(session, "Chain c", session.get(OrgUnit, chain["e"]))
    before = tree_rows(session)
    resp = client.put(f"/api/v1/org_unit/{other.id}", json={"parent": chain["b"]})
    assert resp.status_code == 422 and resp.get_json()["field"] == "name"
    d = session.get(OrgUnit, chain["d"])
    resp = client.post(f"/orgunitview/edit/{d.id}", data=form_data(d, name="CHAIN c", parent=chain["b"]))
    assert resp.status_code == 200
    assert "already has a sub-unit named" in field_errors(resp.text).get("name", "")
    assert tree_rows(session) == before

    # A duplicate top-level name (no parent) is a sibling clash as well.
    hq_name = before[chain["hq"]][0]
    resp = client.post("/api/v1/org_unit/", json={"name": hq_name.upper(), "kind": "company", "parent": None})
    assert resp.status_code == 422 and resp.get_json()["field"] == "name"
    assert tree_rows(session) == before


def test_same_name_under_another_parent_is_fine(client, session, chain):
    login(client, "admin")
    count = session.scalar(select(func.count()).select_from(OrgUnit))
    # "Chain D" lives under C; B and E may each have one of their own.
    resp = client.post("/orgunitview/add", data=form_data(name="Chain D", code="SAME1", parent=chain["b"]))
    assert resp.status_code == 302, field_errors(resp.text)
    resp = client.post("/api/v1/org_unit/",
                       json={"name": "chain d", "code": "SAME2", "kind": "team", "parent": chain["e"]})
    assert resp.status_code == 201, resp.get_json()
    # Editing a unit without renaming it does not clash with itself.
    d = session.get(OrgUnit, chain["d"])
    resp = client.post(f"/orgunitview/edit/{d.id}", data=form_data(d, sort=5))
    assert resp.status_code == 302, field_errors(resp.text)
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(OrgUnit)) == count + 2
    names = set(session.scalars(select(OrgUnit.parent_id).where(func.lower(OrgUnit.name) == "chain d")))
    assert names == {chain["b"], chain["c"], chain["e"]}
    assert session.get(OrgUnit, chain["d"]).sort == 5
    assert_paths_consistent(session)


def test_delete_unit_with_children_or_members_refused(client, session, chain):
    factories.employee(session, session.get(OrgUnit, chain["d"]))
    before = tree_rows(session)
    login(client, "admin")
    # B has children; D has a member.
    resp = client.post(f"/orgunitview/delete/{chain['b']}", follow_redirects=True)
    assert any("still has sub-units" in m for m in flashes(resp.text)), flashes(resp.text)
    resp = client.delete(f"/api/v1/org_unit/{chain['b']}")
    assert resp.status_code == 409 and "still has sub-units" in resp.get_json()["message"]

    resp = client.post(f"/orgunitview/delete/{chain['d']}", follow_redirects=True)
    assert any("still has members" in m for m in flashes(resp.text)), flashes(resp.text)
    resp = client.delete(f"/api/v1/org_unit/{chain['d']}")
    assert resp.status_code == 409 and "still has members" in resp.get_json()["message"]
    assert tree_rows(session) == before

    # An empty leaf goes, by form and by API.
    resp = client.delete(f"/api/v1/org_unit/{chain['e']}")
    assert resp.status_code == 200, resp.get_json()
    leaf = factories.org_unit(session, "Empty leaf", session.get(OrgUnit, chain["hq"]))
    resp = client.post(f"/orgunitview/delete/{leaf.id}", follow_redirects=True)
    assert resp.status_code == 200 and not flashes(resp.text)
    after = tree_rows(session)
    assert set(after) == set(before) - {chain["e"]}


def test_bad_kind_refused_by_api(client, session, chain):
    before = tree_rows(session)
    login(client, "admin")
    resp = client.post("/api/v1/org_unit/",
                       json={"name": "Kindless", "code": "KIND1", "kind": "galaxy", "parent": chain["a"]})
    assert resp.status_code == 422
    assert resp.get_json()["field"] == "kind"
    resp = client.put(f"/api/v1/org_unit/{chain['d']}", json={"kind": "squad"})
    assert resp.status_code == 422 and resp.get_json()["field"] == "kind"
    assert tree_rows(session) == before
    assert session.get(OrgUnit, chain["d"]).kind == "team"
