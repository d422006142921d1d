"""/api/v1/opportunity/: the sales floor's REST API — scoped reads, the claimable pool, and every
ownership or progress change as one POST answering 4xx JSON with a message when refused (nothing is
written then). Times go out as ISO 8601 with the business time zone's offset (app.clock.isoformat)."""

from __future__ import annotations

from flask import request
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.api import expose as api_expose
from flask_appbuilder.models.sqla.interface import SQLAInterface
from sqlalchemy import select

from app import clock
from app.clock import utcnow
from app.extensions import db
from app.models.sales import Opportunity
from app.security import policy
from app.security.input_guards import storable_id
from app.security.scope import current_viewer
from app.services import customers, inputs, metadata, opportunities, ownership, pools
from app.services.errors import DomainError
from app.views.base import CrmModelRestApi
from app.views.sales import (
    OPP_DICT_FIELDS,
    current_actor,
    current_employee,
    parse_api_datetime,
    require_visible,
    visible_employee,
)
from app.views.uow import error_json, json_result

#: what a body's texts may hold: a note or reason goes into the transfer log's 255 characters; a
#: follow-up's content and result are checked by app.services.opportunities (4000, 100).
NOTE_MAX = 255
CONTENT_MAX = 4000
RESULT_MAX = 100
CODE_MAX = 50  # a dictionary item's code
WHEN_MAX = 64  # an ISO 8601 date and time


def _fields(body: dict, **checks) -> dict:
    """Each field of `body` through its check (`name=(check, *args)`, an app.services.inputs function),
    or a 422 naming every field of the wrong type, missing or too long (nothing is done then)."""
    problems: dict[str, str] = {}
    values = {name: check(problems, name, body.get(name), *args) for name, (check, *args) in checks.items()}
    inputs.check(problems)
    return values


def _required_id(problems: dict, name: str, value):
    return inputs.ident(problems, name, value, required=True)


def _ids(problems: dict, name: str, value):
    return inputs.idents(problems, name, value, limit=ownership.MAX_BATCH)


def _when(problems: dict, name: str, value):
    """An ISO 8601 date and time (naive UTC), or the problem."""
    raw = inputs.text(problems, name, value, WHEN_MAX)
    if raw is None:
        return None
    try:
        return parse_api_datetime(raw)
    except DomainError as exc:
        problems[name] = exc.message
    except OverflowError:  # a year 1 or 9999 moved by its offset
        problems[name] = "out of range"
    return None


class OpportunityApi(CrmModelRestApi):
    """/api/v1/opportunity/: read (scoped) and the ownership changes, each a POST answering 4xx JSON
    with a message when refused (nothing is written then)."""

    datamodel = SQLAInterface(Opportunity)
    resource_name = "opportunity"
    class_permission_name = policy.OPPORTUNITY
    # No _info: it would list related customers by name or phone; no post / put / delete: every change
    # is one of the endpoints below, through the ownership service.
    include_route_methods = {"get", "get_list", "pool", "claim", "give_back", "assign", "follow_up", "stage",
                             "lock", "unlock", "transfer_all"}
    method_permission_name = {**policy.METHOD_PERMISSIONS, "pool": "read", "claim": "claim",
                              "give_back": "write", "follow_up": "write", "stage": "write",
                              "assign": "assign", "lock": "assign", "unlock": "assign",
                              "transfer_all": "assign"}
    list_columns = ["id", "customer.id", "customer.name", "product_line.code", "stage.code",
                    "intention_level.code", "status", "owner.id", "owner.name", "pool.id", "pool.name",
                    "org_unit.id", "assigned_at", "claimed_at", "last_followup_at", "next_followup_at",
                    "idle_since", "protected_until", "locked", "closed_at", "win_probability"]
    show_columns = list_columns + ["source.code", "campaign", "region", "lost_reason.code", "is_recycled",
                                   "recycle_count", "created_at", "updated_at"]
    search_columns = ["status", "stage", "product_line", "intention_level", "owner", "pool", "locked",
                      "next_followup_at", "idle_since"]
    order_columns = ["id", "next_followup_at", "idle_since", "last_followup_at", "win_probability"]
    base_order = ("id", "desc")
    dict_fields = OPP_DICT_FIELDS

    def _body(self) -> dict:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise DomainError("The body must be a JSON object", status=400)
        return body

    def _run(self, work):
        """`work(body)` as one unit of work: its dict as a 200, or the refusal as 4xx JSON."""
        return json_result(lambda: work(self._body()))

    @staticmethod
    def _one(opp_id: int) -> int:
        """The opportunity `opp_id` (a checked id), if the user may act on it (else 404)."""
        return require_visible([opp_id])[0]

    @api_expose("/pool", methods=["GET"])
    @protect()
    @safe
    def pool(self):
        """The pooled opportunities the caller may claim now (first 500).
        ---
        get:
          responses:
            200:
              description: Claimable opportunities
        """
        viewer = current_viewer()
        now = utcnow()
        rows = db.session.execute(
            select(Opportunity.id, Opportunity.pool_id, Opportunity.product_line_id, Opportunity.stage_id,
                   Opportunity.intention_level_id)
            .where(pools.claimable_clause(db.session, viewer.employee_id, viewer.org_path, now))
            .order_by(Opportunity.id).limit(500)).all()
        return self.response(200, result=[dict(r._mapping) for r in rows], count=len(rows))

    @api_expose("/claim", methods=["POST"])
    @protect()
    @safe
    def claim(self):
        """Claim pooled opportunities: {"ids": [..]} — all of them, or none (409 with the reason).
        ---
        post:
          responses:
            200:
              description: The claimed ids
            409:
              description: Refused (limit, capacity, cooling, not claimable); nothing claimed
        """
        def work(body):
            ids = _fields(body, ids=(_ids,))["ids"]
            result = ownership.claim(db.session, current_employee(), ids, utcnow(), current_actor())
            return {"claimed": result.moved}
        return self._run(work)

    @api_expose("/give_back", methods=["POST"])
    @protect()
    @safe
    def give_back(self):
        """Give an owned opportunity back to the pool: {"id": n, "reason": "…"}.
        ---
        post:
          responses:
            200:
              description: The pool it went to
        """
        def work(body):
            got = _fields(body, id=(_required_id,), reason=(inputs.text, NOTE_MAX))
            pool = ownership.give_back(db.session, current_employee(), self._one(got["id"]), got["reason"],
                                       utcnow(), current_actor())
            return {"pool": {"id": pool.id, "name": pool.name}}
        return self._run(work)

    @api_expose("/assign", methods=["POST"])
    @protect()
    @safe
    def assign(self):
        """Manager assign / reassign: {"ids": [..], "employee_id": n, "note": "…"}.
        ---
        post:
          responses:
            200:
              description: The ids moved, those already there, and notes (e.g. over capacity)
        """
        def work(body):
            got = _fields(body, ids=(_ids,), employee_id=(_required_id,), note=(inputs.text, NOTE_MAX))
            ids = require_visible(got["ids"], pools_too=True)
            target = visible_employee(got["employee_id"], "employee_id")
            result = ownership.assign(db.session, ids, target, utcnow(), current_actor(), got["note"])
            return {"assigned": result.moved, "skipped": result.skipped, "notes": result.notes}
        return self._run(work)

    @api_expose("/transfer_all", methods=["POST"])
    @protect()
    @safe
    def transfer_all(self):
        """Move all open opportunities of an employee: {"from_employee_id": n, "to_employee_id": m|null}.
        ---
        post:
          responses:
            200:
              description: How many moved
        """
        def work(body):
            got = _fields(body, from_employee_id=(_required_id,), to_employee_id=(inputs.ident,),
                          note=(inputs.text, NOTE_MAX))
            source = visible_employee(got["from_employee_id"], "from_employee_id", active=False)
            target = visible_employee(got["to_employee_id"], "to_employee_id")
            result = ownership.transfer_all(db.session, source, target, utcnow(), current_actor(),
                                            got["note"])
            return {"moved": result.count, "notes": result.notes}
        return self._run(work)

    @api_expose("/follow_up", methods=["POST"])
    @protect()
    @safe
    def follow_up(self):
        """Record a follow-up: {"id": n, "content": "…", "type": item id, "result": "…", "next_followup_at":
        ISO 8601 (business time zone unless it has an offset), "stage": item id (optional)}.
        ---
        post:
          responses:
            200:
              description: The follow-up id and the opportunity's new clocks
        """
        def work(body):
            got = _fields(body, id=(_required_id,), content=(inputs.text, CONTENT_MAX),
                          result=(inputs.text, RESULT_MAX), next_followup_at=(_when,),
                          type=(inputs.option, CODE_MAX), stage=(inputs.option, CODE_MAX),
                          lost_reason=(inputs.option, CODE_MAX))
            opp_id = self._one(got["id"])
            now = utcnow()
            me = current_employee()
            kind = _dict_id(got["type"], opportunities.FOLLOWUP_TYPE_DICT, "type")
            follow_up = opportunities.add_follow_up(db.session, opp_id, me, kind, got["content"],
                                                    got["result"], got["next_followup_at"], now)
            if got["stage"]:
                stage = _dict_id(got["stage"], opportunities.STAGE_DICT, "stage")
                reason = _dict_id(got["lost_reason"], opportunities.LOST_REASON_DICT, "lost_reason")
                opportunities.set_stage(db.session, opp_id, stage, reason, now, current_actor())
            opp = db.session.get(Opportunity, opp_id)
            return {"id": follow_up.id, "opportunity": _clocks(opp)}
        return self._run(work)

    @api_expose("/stage", methods=["POST"])
    @protect()
    @safe
    def stage(self):
        """Move the stage: {"id": n, "stage": code or id, "lost_reason": code or id (for lost)}.
        ---
        post:
          responses:
            200:
              description: The opportunity's status and stage
        """
        def work(body):
            got = _fields(body, id=(_required_id,), stage=(inputs.option, CODE_MAX),
                          lost_reason=(inputs.option, CODE_MAX))
            opp_id = self._one(got["id"])
            stage = _dict_id(got["stage"], opportunities.STAGE_DICT, "stage")
            reason = _dict_id(got["lost_reason"], opportunities.LOST_REASON_DICT, "lost_reason")
            opp = opportunities.set_stage(db.session, opp_id, stage, reason, utcnow(), current_actor())
            return {"opportunity": _clocks(opp)}
        return self._run(work)

    def _locking(self, locked: bool):
        def work(body):
            ids = require_visible(_fields(body, ids=(_ids,))["ids"])
            result = ownership.set_locked(db.session, ids, locked, utcnow(), current_actor())
            return {"changed": result.moved, "skipped": result.skipped}
        return self._run(work)

    @api_expose("/lock", methods=["POST"])
    @protect()
    @safe
    def lock(self):
        """Freeze opportunities: {"ids": [..]}.
        ---
        post:
          responses:
            200:
              description: Changed and unchanged ids
        """
        return self._locking(True)

    @api_expose("/unlock", methods=["POST"])
    @protect()
    @safe
    def unlock(self):
        """Unfreeze opportunities: {"ids": [..]}.
        ---
        post:
          responses:
            200:
              description: Changed and unchanged ids
        """
        return self._locking(False)


def _dict_id(value, type_code: str, field: str):
    """A dictionary item given by id or by code (the API accepts both) in the body's `field`; an id no
    row can have is an unknown option."""
    if value in (None, ""):
        return None
    if (isinstance(value, int) or (isinstance(value, str) and value.isdigit())) and storable_id(value):
        return int(value)
    for item in metadata.dict_items(db.session, type_code, include_disabled=True):
        if item.code == value:
            return item.id
    raise DomainError("Unknown %(kind)s option %(value)s", field=field, status=422, kind=type_code,
                      value=inputs.quote(value))


def _clocks(opp: Opportunity) -> dict:
    iso = clock.isoformat
    return {"id": opp.id, "status": opp.status, "stage_id": opp.stage_id, "owner_id": opp.owner_id,
            "last_followup_at": iso(opp.last_followup_at), "next_followup_at": iso(opp.next_followup_at),
            "idle_since": iso(opp.idle_since), "protected_until": iso(opp.protected_until),
            "closed_at": iso(opp.closed_at)}


class CustomerMergeApi(BaseApi):
    """POST /api/v1/customer/merge: merge one customer into another (app.services.customers)."""

    resource_name = "customer"
    class_permission_name = policy.CUSTOMER
    method_permission_name = {"merge": "merge"}
    allow_browser_login = True
    openapi_spec_tag = "Customers"

    @api_expose("/merge", methods=["POST"])
    @protect()
    @safe
    def merge(self):
        """Merge customer `merged_id` into `survivor_id`; `dry_run` only checks and tells what would move.
        ---
        post:
          responses:
            200:
              description: What moved (or, with dry_run, what would move)
            400:
              description: The body is not a JSON object
            403:
              description: Not allowed, or opportunities outside the caller's data scope
            404:
              description: No such customer in the caller's data scope
            409:
              description: Refused with the reason (already merged, owners differ, same product line)
            422:
              description: A bad field, named
        """
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return error_json(DomainError("The body must be a JSON object", status=400))
        try:
            got = _fields(body, survivor_id=(_required_id,), merged_id=(_required_id,),
                          owner_id=(inputs.ident,), dry_run=(inputs.flag,))
        except DomainError as exc:
            return error_json(exc)
        args = (db.session, current_viewer(), got["survivor_id"], got["merged_id"], got["owner_id"])
        if got["dry_run"]:
            return json_result(lambda: _merge_body(customers.check_merge(*args, require_owner=False)))
        return json_result(lambda: customers.merge(*args, actor=current_actor()),
                           body=lambda r: {**_merge_body(r.plan), "moved": r.moved,
                                           "reassigned": r.reassigned})


def _merge_body(plan: customers.MergePlan) -> dict:
    return {"survivor_id": plan.survivor.id, "merged_id": plan.merged.id, "counts": plan.counts,
            "owners": [{"id": e.id, "name": e.name} for e in plan.owners],
            "owner_id": plan.owner.id if plan.owner else None,
            "owner_required": plan.owner is None and len(plan.owners) > 1}
