"""`flask crm dispatch-rule NAME …`: create or edit a dispatch rule from the command line.

It runs app.services.dispatch_rules.SaveDispatchRule — the same validation the form and the REST API
apply — so a rule refused in the browser is refused here too, with the same message.
"""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from app.cli import crm, run_command
from app.models.sales import STRATEGIES


@crm.command("dispatch-rule")
@click.argument("name")
@click.option("--priority", type=int, help="Lower first.")
@click.option("--strategy", type=click.Choice(STRATEGIES))
@click.option("--team", "target_org_unit_id", type=int, help="Id of the org unit that receives them.")
@click.option("--pool", "target_pool_id", type=int, help="Id of the pool ('pool' strategy, or fallback).")
@click.option("--match-recycled", type=click.Choice(["any", "new", "recycled"]))
@click.option("--campaign", "match_campaign", help="Match campaigns starting with this.")
@click.option("--segment", "match_segment_id", type=int, help="Id of the segment the rule matches.")
@click.option("--fairness-band", type=int, help="Score-aware: ± percent of the round-robin share (0-100).")
@click.option("--enabled/--disabled", default=None)
@click.option("--working-hours-only/--round-the-clock", default=None)
@with_appcontext
def dispatch_rule_command(name, **options):
    """Create the rule NAME, or change the given settings of the existing one."""
    from sqlalchemy import select

    from app.extensions import db
    from app.models.sales import DispatchRule
    from app.services.dispatch_rules import SaveDispatchRule

    values = {k: v for k, v in options.items() if v is not None}
    rule = db.session.scalar(select(DispatchRule).where(DispatchRule.name == name))
    if rule is None:
        values["name"] = name
    rule = run_command("crm dispatch-rule", SaveDispatchRule(db.session, values, rule).run)
    click.echo(f"dispatch rule #{rule.id} {rule.name}: {'enabled' if rule.enabled else 'disabled'}, "
               f"{rule.strategy}, {'working hours only' if rule.working_hours_only else 'round the clock'}")
