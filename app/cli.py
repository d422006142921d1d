"""`flask crm …` commands: role sync, demo seed, user management helpers."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext


@click.group()
def crm():
    """CRM administration commands."""


@crm.command("sync-roles")
@with_appcontext
def sync_roles_command():
    """Create permissions for every view and make roles match app.security.policy."""
    from app.services import audit
    from app.services.roles import sync_roles

    appbuilder = current_app.appbuilder
    with audit.acting_as(None, "sync-roles"):
        report = sync_roles(appbuilder)
    click.echo(f"roles created: {', '.join(report.created) or 'none'}")
    for name in report.granted:
        click.echo(f"  {name}: +{report.granted[name]} -{report.revoked[name]}")


@crm.command("seed-demo")
@with_appcontext
def seed_demo_command():
    """Load the demo organisation, employees, logins and metadata (safe to run again)."""
    from app.extensions import db
    from app.services import audit
    from app.services.seed import demo_logins, seed_demo

    with audit.acting_as(None, "seed-demo"):
        counts = seed_demo(db.session, current_app.appbuilder)
    click.echo("demo data: " + json.dumps(counts))
    for username, password, role in demo_logins():
        click.echo(f"  {username:<14} {password:<16} {role}")


@crm.command("create-api-key")
@click.argument("username")
@click.argument("name")
@with_appcontext
def create_api_key_command(username, name):
    """Create an API key for USERNAME (printed once; store it in the calling system)."""
    sm = current_app.appbuilder.sm
    user = sm.find_user(username=username)
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    created = sm.create_api_key(user, name)
    click.echo(created["key"])
