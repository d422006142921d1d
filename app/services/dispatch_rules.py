"""The settings dispatch and circulation run by — dispatch rules, circulation rules, public pools, sales
profiles — and the rules those settings must follow, whichever way they are written.

Superset's command pattern: a command validates, then runs. `SaveDispatchRule(session, values, rule).run()`
(and its siblings) applies the values to a new or existing row, validates the whole row, and only then
adds it to the session; the caller commits. The HTML forms and the REST API let FAB build the row from
the request and call the same `validate_*` function before FAB saves it (CrmViewMixin.check_item); the
`flask crm dispatch-rule` command uses the command itself. So a rule edited through any path is checked
the same way, and a refusal is a DomainError naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import inspect

from app.models.sales import POOL_STRATEGY, STRATEGIES, CirculationRule, DispatchRule, Pool, SalesProfile
from app.services.commands import apply_column_defaults
from app.services.dispatch_score import DEFAULT_BAND
from app.services.errors import DomainError

RECYCLED_CHOICES = ("any", "new", "recycled")  # DispatchRule.match_recycled
_CIRCULATION_COUNTS = ("idle_days", "stage_deadline_days", "no_deal_days", "protect_days",
                       "protect_extend_days", "protect_max_days", "remind_hours", "capacity", "cooling_days")


def _chosen(session, item, relation: str, foreign_key: str):
    """What a many-to-one points at: the object just chosen (a form or API sets the relation), else the
    row of the id (a command may set only that; None when there is no such row)."""
    history = inspect(item).attrs[relation].history
    if history.added or history.deleted:
        return history.added[0] if history.added else None
    chosen_id = getattr(item, foreign_key)
    if chosen_id is None:
        return getattr(item, relation)
    return session.get(inspect(type(item)).relationships[relation].mapper.class_, chosen_id)


# --- the rules ----------------------------------------------------------------------------------------
def validate_dispatch_rule(session, rule: DispatchRule) -> None:
    if not (rule.name or "").strip():
        raise DomainError("A name is required", field="name")
    if rule.strategy not in STRATEGIES:
        raise DomainError("Strategy must be one of %(values)s", field="strategy",
                          values=", ".join(STRATEGIES))
    if rule.strategy == POOL_STRATEGY and _chosen(session, rule, "target_pool", "target_pool_id") is None:
        raise DomainError("A 'to pool' rule needs a pool", field="target_pool")
    team = _chosen(session, rule, "target_org_unit", "target_org_unit_id")
    if rule.strategy != POOL_STRATEGY and team is None:
        raise DomainError("Choose the team that receives the opportunities", field="target_org_unit")
    if rule.match_recycled not in RECYCLED_CHOICES:
        raise DomainError("New / recycled must be any, new or recycled", field="match_recycled")
    history = inspect(rule).attrs["match_segment"].history
    cleared = history.has_changes() and not any(history.added)  # a form took the segment off
    segment = _chosen(session, rule, "match_segment", "match_segment_id")
    if rule.match_segment_id is not None and segment is None and not cleared:  # a command naming no such one
        raise DomainError("Not a valid choice", field="match_segment")
    if rule.fairness_band is None:
        rule.fairness_band = DEFAULT_BAND  # left empty on the form: the default band
    if isinstance(rule.fairness_band, bool) or not isinstance(rule.fairness_band, int) \
            or not 0 <= rule.fairness_band <= 100:
        raise DomainError("Enter a number from %(low)s to %(high)s", field="fairness_band", low=0, high=100)


def validate_circulation_rule(session, rule: CirculationRule) -> None:
    if rule.capacity_by_level:
        try:
            levels = json.loads(rule.capacity_by_level)
        except ValueError:
            levels = None
        if not isinstance(levels, dict) or not all(isinstance(v, int) and v >= 0 for v in levels.values()):
            raise DomainError('Capacity by level must be a JSON object like {"P1": 50}',
                              field="capacity_by_level")
    for name in _CIRCULATION_COUNTS:
        value = getattr(rule, name)
        if value is not None and value < 0:
            raise DomainError("Must not be negative", field=name)
    if rule.protect_max_days is not None and rule.protect_days and rule.protect_max_days < rule.protect_days:
        raise DomainError("The maximum protection is shorter than the protection itself",
                          field="protect_max_days")
    if bool(rule.stage_deadline_days) != bool(_chosen(session, rule, "target_stage", "target_stage_id")):
        raise DomainError("Give both the stage to reach and the days to reach it", field="target_stage")


def validate_pool(session, pool: Pool) -> None:
    if pool.daily_claim_limit is None or pool.daily_claim_limit < 0:
        raise DomainError("The daily claim limit must be 0 or more", field="daily_claim_limit")


def validate_sales_profile(session, profile: SalesProfile) -> None:
    if profile.weight is None or profile.weight < 0:
        raise DomainError("The weight must be 0 or more", field="weight")
    for name in ("daily_quota", "capacity"):
        if getattr(profile, name) is not None and getattr(profile, name) < 0:
            raise DomainError("Must not be negative", field=name)


# --- the commands -------------------------------------------------------------------------------------
class SaveCommand:
    """Create (`item` None) or edit one settings row: `run()` applies `values`, validates the row, then
    adds it to the session and flushes. Nothing is added when validation refuses (the caller rolls back
    the changed attributes with the transaction)."""

    model: type
    validator: Callable
    fields: tuple[str, ...]

    def __init__(self, session, values: dict, item=None):
        self.session = session
        self.values = values
        self.item = item

    def validate(self):
        unknown = sorted(set(self.values) - set(self.fields))
        if unknown:
            raise DomainError("Unknown field(s): %(names)s", field=unknown[0], status=400,
                              names=", ".join(unknown))
        item = self.item if self.item is not None else self.model()
        if self.item is None:
            apply_column_defaults(item)
        for name, value in self.values.items():
            setattr(item, name, value)
        with self.session.no_autoflush:
            type(self).validator(self.session, item)
        return item

    def run(self):
        item = self.validate()
        self.session.add(item)
        self.session.flush()
        return item


class SaveDispatchRule(SaveCommand):
    model = DispatchRule
    validator = validate_dispatch_rule
    fields = ("name", "priority", "enabled", "match_source_id", "match_campaign", "match_product_line_id",
              "match_region", "match_intention_level_id", "match_recycled", "target_org_unit_id", "strategy",
              "target_pool_id", "working_hours_only", "match_segment_id", "fairness_band")


class SaveCirculationRule(SaveCommand):
    model = CirculationRule
    validator = validate_circulation_rule
    fields = ("name", "enabled", "org_unit_id", "product_line_id", "intention_level_id", *_CIRCULATION_COUNTS,
              "target_stage_id", "capacity_by_level", "capacity_counts_won", "exempt_stages",
              "recycle_to_pool_id")


class SavePool(SaveCommand):
    model = Pool
    validator = validate_pool
    fields = ("name", "org_unit_id", "product_line_id", "daily_claim_limit", "enabled")


class SaveSalesProfile(SaveCommand):
    model = SalesProfile
    validator = validate_sales_profile
    fields = ("employee_id", "paused", "weight", "daily_quota", "capacity")
