"""Reference data apart from demo data: a deploy (migrate + sync-roles + sync-reference) has every
dictionary and config item the product needs, and no demo organisation, people or activity; the sync is
idempotent and never overwrites an administrator's change; every config key the code reads is declared
once, with its default, in app.services.reference; and such an install, with only the org unit, people
and rules a company would enter, takes a lead from intake through dispatch and follow-up to won."""

from __future__ import annotations

import ast
import pathlib
import re

from sqlalchemy import func, select

from app.models import (
    AssignmentLog,
    AuditLog,
    ConfigItem,
    CrmUser,
    Customer,
    DictItem,
    DictType,
    Employee,
    FollowUp,
    Lead,
    Opportunity,
    OrgUnit,
    Pool,
    SalesProfile,
)
from app.models.sales import DISPATCH, LOST, OWNED, WAITING, WON
from app.services import metadata, reference
from app.services.metadata import parse_config_value
from tests import factories, installs
from tests.conftest import api_token

production_db, production_app = installs.production_db, installs.production_app
production_session = installs.production_session

APP = pathlib.Path(__file__).resolve().parent.parent / "app"


def reference_rows(session) -> dict:
    """Every dictionary type, item and config item with all its columns (timestamps included)."""
    session.expire_all()

    def rows(model):
        columns = [c.key for c in model.__table__.columns]
        return sorted(tuple(getattr(r, c) for c in columns) for r in session.scalars(select(model)))

    return {model.__name__: rows(model) for model in (DictType, DictItem, ConfigItem)}


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


# --- what a deploy has --------------------------------------------------------------------------------
def test_a_deploy_has_the_reference_data_and_no_demo_data(production_session):
    session = production_session
    for (code, name_zh, name_en), items in reference.DICTIONARIES.items():
        dtype = session.scalar(select(DictType).where(DictType.code == code))
        assert (dtype.name_zh, dtype.name_en) == (name_zh, name_en)
        assert [(i.code, i.label_zh, i.label_en, i.enabled) for i in dtype.items] == [
            (c, z, e, True) for c, z, e in items]
    stages = {i.code for i in metadata.dict_items(session, reference.OPPORTUNITY_STAGE)}
    assert {"new", "trial", WON, LOST} <= stages  # the codes the services name
    assert "call" in {i.code for i in metadata.dict_items(session, reference.FOLLOWUP_TYPE)}
    configs = {c.key: c for c in session.scalars(select(ConfigItem))}
    assert set(configs) == {s.key for s in reference.SETTINGS}
    for s in reference.SETTINGS:
        assert (configs[s.key].value_type, configs[s.key].value) == (s.value_type, s.raw)
        assert metadata.config_value(session, s.key) == reference.default(s.key)
    # No demo organisation, people or activity.
    for model in (OrgUnit, Employee, CrmUser, Pool, Customer, Lead, Opportunity):
        assert count(session, model) == 0, model.__name__
    # Audited, as the deploy step that made them.
    made = session.execute(select(AuditLog.target_type, AuditLog.actor_id, AuditLog.actor_name)
                           .where(AuditLog.action == "create",
                                  AuditLog.target_type.in_(("dict_type", "dict_item", "config_item")))).all()
    assert len(made) == len(reference.DICTIONARIES) + sum(map(len, reference.DICTIONARIES.values())) + len(
        reference.SETTINGS)
    assert {(actor_id, name) for _, actor_id, name in made} == {(None, "sync-reference")}


def test_each_setting_default_is_a_valid_value_of_its_type():
    for s in reference.SETTINGS:
        assert parse_config_value(s.value_type, s.raw) == reference.default(s.key)
    assert len({s.key for s in reference.SETTINGS}) == len(reference.SETTINGS)
    assert reference.default("sms.quiet_hours") is not reference.default("sms.quiet_hours")  # a fresh copy


# --- the sync -------------------------------------------------------------------------------------------
def test_sync_reference_twice_changes_nothing_and_keeps_administrator_edits(production_app,
                                                                             production_session):
    session, runner = production_session, production_app.test_cli_runner()
    before, audits = reference_rows(session), count(session, AuditLog)
    result = runner.invoke(args=["crm", "sync-reference"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["dict types added: none", "dict items added: none",
                                          "config items added: none"]
    assert reference_rows(session) == before and count(session, AuditLog) == audits

    # An administrator changes values, labels, order and enabled flags through the API …
    admin = factories.employee(session, factories.org_unit(session, kind="company"))
    factories.login_user(production_app, session, admin, "Admin")
    client = production_app.test_client()
    jwt = {"Authorization": f"Bearer {api_token(client, admin.user.username, factories.PASSWORD)}"}
    hours = session.scalar(select(ConfigItem).where(ConfigItem.key == "dispatch.working_hours"))
    trial = factories.dict_item(session, reference.OPPORTUNITY_STAGE, "trial")
    wechat = factories.dict_item(session, reference.LEAD_SOURCE, "wechat")
    edits = [(f"/api/v1/config_item/{hours.id}", {"value": '{"start": "08:30", "end": "22:00"}'}),
             (f"/api/v1/dict_item/{trial.id}", {"label_zh": "体验课", "sort": 99}),
             (f"/api/v1/dict_item/{wechat.id}", {"enabled": False})]
    for url, body in edits:
        resp = client.put(url, json=body, headers=jwt)
        assert resp.status_code == 200, resp.get_json()
    # … and an older install lacks an item and a config key that a release added.
    newer = factories.dict_item(session, reference.LOST_REASON, "unreachable")
    session.delete(newer)
    session.delete(session.scalar(select(ConfigItem).where(ConfigItem.key == "calls.line_busy_minutes")))
    session.commit()
    edited = reference_rows(session)

    result = runner.invoke(args=["crm", "sync-reference"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["dict types added: none",
                                          "dict items added: lost_reason.unreachable",
                                          "config items added: calls.line_busy_minutes"]
    after = reference_rows(session)
    for model, rows in edited.items():
        assert set(rows) <= set(after[model]), model  # every row as the administrator left it
    assert len(after["DictItem"]) == len(edited["DictItem"]) + 1
    assert len(after["ConfigItem"]) == len(edited["ConfigItem"]) + 1
    session.expire_all()
    assert metadata.config_value(session, "dispatch.working_hours") == {"start": "08:30", "end": "22:00"}
    assert (trial.label_zh, trial.sort, wechat.enabled) == ("体验课", 99, False)
    restored = factories.dict_item(session, reference.LOST_REASON, "unreachable")
    assert restored.enabled and restored.sort > max(  # after the administrator's order
        i.sort for i in metadata.dict_items(session, reference.LOST_REASON) if i.code != "unreachable")
    busy = "calls.line_busy_minutes"
    assert metadata.config_value(session, busy) == reference.default(busy) == 30

    again = runner.invoke(args=["crm", "sync-reference"])
    assert again.output.splitlines()[1:] == ["dict items added: none", "config items added: none"]
    assert reference_rows(session) == after


def test_seed_demo_adds_only_demo_data(session):
    """The suite's demo database (sync-reference, then seed-demo): its dictionaries and config items are
    the reference data exactly, but for the demo's fallback pool, which exists only in the demo."""
    from app.services.seed import DEMO_CONFIG

    assert count(session, Employee) > 0 and count(session, Opportunity) > 0
    dictionaries = {(t.code, t.name_zh, t.name_en): [(i.code, i.label_zh, i.label_en) for i in t.items]
                    for t in session.scalars(select(DictType))}
    assert dictionaries == reference.DICTIONARIES
    configs = {c.key: (c.value_type, c.value) for c in session.scalars(select(ConfigItem))}
    assert configs == {s.key: (s.value_type, DEMO_CONFIG.get(s.key, s.raw)) for s in reference.SETTINGS}
    assert DEMO_CONFIG == {"dispatch.fallback_pool": "销售总公海"}
    assert session.scalar(select(Pool).where(Pool.name == DEMO_CONFIG["dispatch.fallback_pool"])) is not None


# --- one place for each default -------------------------------------------------------------------------
def _config_reads() -> list[tuple[str, int, ast.Call, dict]]:
    """(file, line, call, module string constants) of every config_value(...) / _config(...) call in app/."""
    found = []
    for path in sorted(APP.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                     for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and len(node.args) >= 2:
                name = getattr(node.func, "attr", getattr(node.func, "id", None))
                if name in ("config_value", "_config"):
                    found.append((str(path.relative_to(APP.parent)), node.lineno, node, constants))
    return found


def test_every_config_key_read_by_the_code_is_declared_with_its_default():
    reads = _config_reads()
    assert reads
    undeclared, repeated = [], []
    for where, line, call, constants in reads:
        key = call.args[1]
        if isinstance(key, ast.Constant):
            key = key.value
        elif isinstance(key, ast.Name) and key.id in constants:
            key = constants[key.id]
        else:
            continue  # a key passed through (the helper that reads it is checked at its callers)
        if key not in {s.key for s in reference.SETTINGS}:
            undeclared.append(f"{where}:{line} {key}")
        default = call.args[2] if len(call.args) > 2 else None
        if isinstance(default, ast.Constant) and default.value is not None:
            repeated.append(f"{where}:{line} {key} = {default.value!r}")
    assert not undeclared, "declare these keys in app.services.reference.SETTINGS: " + ", ".join(undeclared)
    assert not repeated, "take these defaults from app.services.reference.default(): " + ", ".join(repeated)


def test_every_string_in_app_that_names_a_config_key_names_a_declared_one():
    """Keys held in constants or passed through helpers (calls.max_daily_attempts …) are caught here."""
    declared = {s.key for s in reference.SETTINGS}
    domains = "|".join(sorted({key.split(".")[0] for key in declared}))
    looks_like_key = re.compile(rf"^({domains})\.[a-z_]+$")
    undeclared = [f"{path.relative_to(APP.parent)}:{node.lineno} {node.value}"
                  for path in sorted(APP.rglob("*.py"))
                  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and looks_like_key.match(node.value) and node.value not in declared]
    assert not undeclared, "declare these keys in app.services.reference.SETTINGS: " + ", ".join(undeclared)


def _string_constants(tree) -> dict[str, str]:
    """NAME → "text" of a module's top-level string constants (`A = "x"` and `A, B = "x", "y"`)."""
    found = {}
    for node in tree.body:
        for target in node.targets if isinstance(node, ast.Assign) else ():
            pairs = [(target, node.value)]
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = list(zip(target.elts, node.value.elts, strict=False))
            found.update({name.id: value.value for name, value in pairs if isinstance(name, ast.Name)
                          and isinstance(value, ast.Constant) and isinstance(value.value, str)})
    return found


def _code(node, constants: dict[str, str]) -> str | None:
    """The text of a literal, or of the constant a name or attribute (`ownership.STAGE_DICT`) holds."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    return constants.get(getattr(node, "id", getattr(node, "attr", None)))


DICT_READERS = {"dict_items", "check_dict_choice", "_dict_item", "_codes", "_dict_id", "_dict_choices"}


def test_every_dictionary_the_code_names_is_reference_data():
    """Dictionaries named by dropdowns (`dict_fields`) and by reads (dict_items, check_dict_choice …)."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(APP.rglob("*.py"))}
    everywhere: dict[str, str] = {}
    for tree in trees.values():
        everywhere.update(_string_constants(tree))
    named = []
    for path, tree in trees.items():
        constants = {**everywhere, **_string_constants(tree)}
        for node in ast.walk(tree):
            targets = [getattr(t, "id", "") for t in getattr(node, "targets", [])]
            if any(t == "dict_fields" or t.endswith("DICT_FIELDS") for t in targets):
                values = node.value.values if isinstance(node.value, ast.Dict) else []
                named += [(path, node.lineno, _code(v, constants)) for v in values]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr",
                                                        getattr(node.func, "id", None)) in DICT_READERS:
                codes = [_code(arg, constants) for arg in node.args[:3]]
                named += [(path, node.lineno, c) for c in codes if c and c.islower() and "_" in c]
    declared = {code for code, _, _ in reference.DICTIONARIES}
    assert {code for _, _, code in named} >= {reference.PRODUCT_LINE, reference.OPPORTUNITY_STAGE}
    unknown = [f"{path.relative_to(APP.parent)}:{line} {code}" for path, line, code in named
               if code and code not in declared]
    assert not unknown, "add these dictionaries to app.services.reference.DICTIONARIES: " + ", ".join(unknown)


# --- a production install at work ---------------------------------------------------------------------
def test_a_production_install_takes_a_lead_from_intake_through_dispatch_and_follow_up_to_won(
        production_app, production_session):
    """No demo data: the company enters its org unit, people and dispatch rule (factories), then a lead
    comes in through the API, the dispatch engine assigns it, its owner follows up and wins it."""
    from app.services.dispatch import dispatch_waiting

    session = production_session
    company = factories.org_unit(session, "学而优教育", kind="company", code="HQ")
    team = factories.org_unit(session, "K12 一组", parent=company, kind="team", code="T-K12-1")
    seller = factories.salesperson(production_app, session, team)
    back_office = factories.employee(session, company)
    factories.login_user(production_app, session, back_office, "Back Office")
    math = factories.dict_item(session, reference.PRODUCT_LINE, "k12_math")
    factories.DISPATCH_RULE.create(session, name="K12 数学 → K12 一组", match_product_line_id=math.id,
                                   target_org_unit_id=team.id)

    client = production_app.test_client()
    jwt = {"Authorization": f"Bearer {api_token(client, back_office.user.username, factories.PASSWORD)}"}
    resp = client.post("/api/v1/lead/", headers={**jwt, "Idempotency-Key": "landing-page-1"}, json={
        "name": "王家长", "phone": "13800138000", "product_line": "k12_math", "source": "web_form",
        "intention_level": "A", "consult_note": "想了解试听课"})
    assert resp.status_code == 201, resp.get_json()
    opp_id = resp.get_json()["opportunity_id"]
    assert resp.get_json()["opportunity_status"] == WAITING

    assert dispatch_waiting(session).assigned == 1
    session.commit()
    session.expire_all()
    opp = session.get(Opportunity, opp_id)
    assert (opp.status, opp.owner_id, opp.stage.code) == (OWNED, seller.id, "new")
    log = session.scalar(select(AssignmentLog).where(AssignmentLog.opportunity_id == opp_id))
    assert (log.reason, log.to_owner_id) == (DISPATCH, seller.id)

    jwt = {"Authorization": f"Bearer {api_token(client, seller.user.username, factories.PASSWORD)}"}
    resp = client.post("/api/v1/opportunity/follow_up", headers=jwt, json={
        "id": opp_id, "content": "电话沟通，约了周六试听", "type": "call", "result": "约试听",
        "stage": "trial"})
    assert resp.status_code == 200, resp.get_json()
    resp = client.post("/api/v1/opportunity/stage", headers=jwt, json={"id": opp_id, "stage": WON})
    assert resp.status_code == 200, resp.get_json()

    session.expire_all()
    opp = session.get(Opportunity, opp_id)
    assert (opp.status, opp.stage.code, opp.owner_id) == (WON, WON, seller.id)
    assert opp.closed_at is not None
    follow_up = session.scalar(select(FollowUp).where(FollowUp.opportunity_id == opp_id))
    assert (follow_up.employee_id, follow_up.type.code) == (seller.id, "call")
    assert session.get(SalesProfile, seller.id).won_count == 1
