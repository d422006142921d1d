"""Demo data: a company with departments, teams, employees in every role, logins, pools, rules, leads.

The reference data (dictionaries, config items) comes first from app.services.reference, as every deploy
has it; everything added here exists only for the demo. Idempotent: every object is looked up by its
natural key first, so running it again changes nothing.
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select

from app import clock
from app.models.employee import Employee
from app.models.metadata import ConfigItem, DictItem, DictType
from app.models.org import OrgUnit
from app.services import reference

DEMO_PASSWORD = "Demo-Pass-2026"
ADMIN_PASSWORD = "Admin-Pass-2026"
HR_BOT = "hr-bot"

# Reference data (dictionaries, config keys) is app.services.reference's; these are the demo's own
# values for a few config items (set only while the item still has its reference default).
DEMO_CONFIG = {"dispatch.fallback_pool": "销售总公海"}
DICTIONARIES = reference.DICTIONARIES
#: (key, value type, value, description) of the config items as a demo install has them.
CONFIG = [(s.key, s.value_type, DEMO_CONFIG.get(s.key, s.raw), s.description) for s in reference.SETTINGS]

# (name, org unit code, product line code, daily claim limit)
POOLS = [("销售总公海", "SALES", None, 30), ("K12 公海", "D-K12", "k12_math", 20),
         ("成人英语公海", "D-ADULT", "adult_english", 20), ("少儿编程公海", "D-CODE", "programming", 20)]
# (name, priority, product line, target unit, strategy, pool)
DISPATCH_RULES = [
    ("K12 数学 → K12 销售部", 10, "k12_math", "D-K12", "round_robin", "K12 公海"),
    ("K12 英语 → K12 销售部", 20, "k12_english", "D-K12", "round_robin", "K12 公海"),
    ("成人英语 → 成人英语销售部（按权重）", 30, "adult_english", "D-ADULT", "weighted", "成人英语公海"),
    ("少儿编程 → 编程销售部（最空闲优先）", 40, "programming", "D-CODE", "least_loaded", "少儿编程公海"),
]
DEMO_LEADS = 240

# (code, name, kind, parent code)
UNITS = [
    ("HQ", "学而优教育", "company", None),
    ("SALES", "销售事业部", "division", "HQ"),
    ("D-K12", "K12 销售部", "department", "SALES"),
    ("D-ADULT", "成人英语销售部", "department", "SALES"),
    ("D-CODE", "少儿编程销售部", "department", "SALES"),
    ("D-OPS", "运营支持部", "department", "HQ"),
    ("T-K12-1", "K12 一组", "team", "D-K12"), ("T-K12-2", "K12 二组", "team", "D-K12"),
    ("T-ADULT-1", "成人一组", "team", "D-ADULT"), ("T-ADULT-2", "成人二组", "team", "D-ADULT"),
    ("T-CODE-1", "编程一组", "team", "D-CODE"), ("T-CODE-2", "编程二组", "team", "D-CODE"),
    ("T-QA", "质检组", "team", "D-OPS"), ("T-BO", "后台组", "team", "D-OPS"),
    ("T-MKT", "市场组", "team", "D-OPS"),
]

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"


def _people():
    """(username, employee_no, name, unit code, role, manager username, level) for the demo staff."""
    people = [("admin", "E0001", "系统管理员", "HQ", "Admin", None, "M2"),
              ("director", "E0002", "赵总监", "SALES", "Sales Director", None, "M2")]
    n = 3
    teams = ["T-K12-1", "T-K12-2", "T-ADULT-1", "T-ADULT-2", "T-CODE-1", "T-CODE-2"]
    for t, team in enumerate(teams, start=1):
        manager = f"manager{t}"
        people.append((manager, f"E{n:04d}", SURNAMES[t] + "经理", team, "Sales Manager", "director", "M1"))
        n += 1
        for k in range(1, 6):
            name = SURNAMES[(t * 5 + k) % len(SURNAMES)] + GIVEN[(t * 3 + k) % len(GIVEN)]
            people.append((f"sales{t}{k}", f"E{n:04d}", name, team, "Salesperson", manager,
                           "P1" if k < 3 else "P2"))
            n += 1
    for k in range(1, 3):
        people.append((f"qa{k}", f"E{n:04d}", f"质检员{k}", "T-QA", "QA Inspector", None, "P2"))
        n += 1
    for k in range(1, 3):
        people.append((f"backoffice{k}", f"E{n:04d}", f"后台{k}", "T-BO", "Back Office", None, "P1"))
        n += 1
    people.append(("marketing", f"E{n:04d}", "市场专员", "T-MKT", "Marketing", None, "P2"))
    return people


def demo_logins() -> list[tuple[str, str, str]]:
    """(username, password, role) of the demo logins worth knowing (one per role)."""
    shown = {}
    for username, _no, _name, _unit, role, _mgr, _lvl in _people():
        shown.setdefault(role, username)
    return [(u, ADMIN_PASSWORD if r == "Admin" else DEMO_PASSWORD, r) for r, u in shown.items()]


def _get_or_create(session, model, lookup: dict, values: dict):
    obj = session.scalar(select(model).filter_by(**lookup))
    if obj is None:
        obj = model(**lookup, **values)
        session.add(obj)
        session.flush()
        return obj, True
    return obj, False


def seed_demo(session, appbuilder) -> dict:
    """Sync the reference data, then add the demo organisation, people and activity; commits."""
    added = reference.sync_reference(session)
    counts = {"dict_items": len(added["dict_items"]), "config_items": len(added["config_items"]),
              "org_units": 0, "employees": 0, "users": 0}
    for key, value in DEMO_CONFIG.items():
        item = session.scalar(select(ConfigItem).where(ConfigItem.key == key))
        if item is not None and item.value == reference.setting(key).raw:
            item.value = value
    units = {}
    for code, name, kind, parent in UNITS:
        parent_id = units[parent].id if parent else None
        unit, created = _get_or_create(session, OrgUnit, {"code": code},
                                       {"name": name, "kind": kind, "parent_id": parent_id})
        units[code] = unit
        counts["org_units"] += created
    levels = dict(session.execute(
        select(DictItem.code, DictItem.id).join(DictItem.dict_type)
        .where(DictType.code == reference.EMPLOYEE_LEVEL)
    ).all())
    sm = appbuilder.sm
    employees = {}
    for i, (username, no, name, unit, role_name, manager, level) in enumerate(_people()):
        phone = f"+86138{i:08d}"
        emp, created = _get_or_create(session, Employee, {"employee_no": no}, {
            "name": name, "org_unit_id": units[unit].id, "phone": phone, "email": f"{username}@example.com",
            "position": role_name, "level_id": levels.get(level), "hired_on": dt.date(2024, 3, 1),
            "manager_id": employees[manager].id if manager else None,
        })
        employees[username] = emp
        counts["employees"] += created
        if emp.user_id is None:
            user = sm.find_user(username=username)
            if user is None:
                role = sm.find_role(role_name)
                if role is None:
                    raise RuntimeError(f"role {role_name!r} is missing: run `flask crm sync-roles` first")
                password = ADMIN_PASSWORD if role_name == "Admin" else DEMO_PASSWORD
                user = sm.add_user(username, name[:1], name[1:] or name, f"{username}@example.com", role,
                                   password)
                counts["users"] += 1
            emp.user_id = user.id
    counts.update(seed_sales(session, units, employees))
    counts.update(seed_sms(session))
    from app.services.calls.demo import seed_calls

    counts.update(seed_calls(session, employees, clock.utcnow()))
    if sm.find_user(username=HR_BOT) is None:
        # The HR system's account: it authenticates with API keys only (its password is never known).
        sm.add_user(HR_BOT, "HR", "Integration", "hr-bot@example.com", sm.find_role("HR Integration"),
                    secrets.token_urlsafe(24) + "Aa1")
        counts["users"] += 1
    session.commit()
    return counts


def seed_sales(session, units: dict, employees: dict) -> dict:
    """Sales profiles, pools, circulation and dispatch rules, and demo leads waiting for dispatch."""
    from app.models.sales import CirculationRule, DispatchRule, Pool, SalesProfile
    from app.services.leads import LeadInput, intake

    counts = {"pools": 0, "dispatch_rules": 0, "leads": 0}
    items = {(t, c): i for t, c, i in session.execute(
        select(DictType.code, DictItem.code, DictItem.id).join(DictItem.dict_type)).all()}
    for username, emp in employees.items():
        if username.startswith("sales") and session.get(SalesProfile, emp.id) is None:
            weight = 150 if username.endswith(("1", "2")) else 100
            session.add(SalesProfile(employee_id=emp.id, weight=weight, daily_quota=200))
    pools = {}
    for name, unit, line, limit in POOLS:
        pool, created = _get_or_create(session, Pool, {"name": name}, {
            "org_unit_id": units[unit].id, "daily_claim_limit": limit,
            "product_line_id": items.get(("product_line", line))})
        pools[name] = pool
        counts["pools"] += created
    _get_or_create(session, CirculationRule, {"name": "销售事业部默认流转规则"}, {
        "org_unit_id": units["SALES"].id, "idle_days": 7, "protect_days": 3, "protect_extend_days": 1,
        "protect_max_days": 7, "remind_hours": 24, "capacity": 150, "cooling_days": 3,
        "capacity_by_level": '{"P1": 100, "P2": 150}', "exempt_stages": "won,lost,trial",
        "no_deal_days": 60})
    for name, priority, line, unit, strategy, pool in DISPATCH_RULES:
        _, created = _get_or_create(session, DispatchRule, {"name": name}, {
            "priority": priority, "match_product_line_id": items[("product_line", line)],
            "target_org_unit_id": units[unit].id, "strategy": strategy, "target_pool_id": pools[pool].id})
        counts["dispatch_rules"] += created
    session.flush()
    lines = ["k12_math", "k12_english", "adult_english", "programming"]
    sources = ["web_form", "douyin", "baidu", "wechat", "referral", "offline"]
    levels = ["A", "B", "C"]
    for i in range(DEMO_LEADS):
        values = LeadInput(
            phone=f"+86139{70000000 + i:08d}", product_line_id=items[("product_line", lines[i % 4])],
            name=SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 7) % len(GIVEN)] + "家长",
            source_id=items[("lead_source", sources[i % 6])], campaign=f"2026-双十一-{i % 3 + 1}",
            region=["上海", "北京", "广州", "成都"][i % 4],
            intention_level_id=items[("intention_level", levels[i % 3])],
            consult_note="咨询课程价格与试听安排", client_key=f"demo:{i}")
        if not intake(session, values, "form", "seed-demo").replayed:
            counts["leads"] += 1
    return counts


def seed_sms(session) -> dict:
    """A local sink channel and an approved marketing template, so a demo campaign can be sent at once
    (notification templates are left to the administrator: each event needs its own)."""
    from app.models.sms import APPROVED, SmsChannel, SmsTemplate
    from app.services.sms.templates import check_template

    channel, _ = _get_or_create(session, SmsChannel, {"name": "本地测试通道（sink）"}, {
        "provider": "sink", "signature": "学而优教育", "opt_out_text": "拒收请回复R", "rate_limit": 500,
        "batch_size": 200})
    templates = [
        ("双十一试听课营销", "marketing", None, "name",
         "{name}您好，双十一少儿编程试听课免费预约中，名额有限。拒收请回复R"),
    ]
    created = 0
    for name, kind, event, variables, body in templates:
        template, new = _get_or_create(session, SmsTemplate, {"name": name}, {
            "kind": kind, "event": event, "variables": variables, "body": body, "channel_id": channel.id})
        if new:
            check_template(template, channel, session)
            template.status, template.reviewed_by = APPROVED, "seed-demo"
            created += 1
    return {"sms_templates": created}
