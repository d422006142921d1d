"""`flask crm onboard`: the onboarding form's command from the command line (app.services.onboarding)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from app.cli import crm, run_command


@crm.command("onboard")
@click.option("--employee-no", required=True)
@click.option("--name", required=True)
@click.option("--org-unit", "org_unit_id", type=int, required=True, help="Id of the org unit.")
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.option("--password", required=True, prompt=True, hide_input=True)
@click.option("--role", "roles", multiple=True, required=True, help="Role name; repeatable.")
@click.option("--phone")
@click.option("--position")
@click.option("--manager", "manager_id", type=int, help="Id of the manager's employee record.")
@click.option("--hired-on", type=click.DateTime(["%Y-%m-%d"]))
@with_appcontext
def onboard_command(roles, hired_on, **options):
    """Create an employee with a login and roles, in one transaction (same checks as the form)."""
    from app.extensions import db
    from app.services.onboarding import Onboarding, onboard

    req = Onboarding(roles=list(roles), hired_on=hired_on.date() if hired_on else None, **options)
    emp = run_command("cli", lambda: onboard(db.session, current_app.appbuilder.sm, req, may_grant_admin=True,
                                             region=current_app.config["CRM_DEFAULT_REGION"]))
    click.echo(f"employee {emp.id} ({emp.employee_no}) can sign in as {emp.user.username}")
