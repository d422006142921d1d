"""`flask crm …` commands: role and reference data sync (deploy steps), demo seed, user helpers."""

from __future__ import annotations

import importlib
import json

import click
from flask import current_app
from flask.cli import with_appcontext

#: demo data of the systems around the sales domain, in this order (app.services.seed_<name>.seed_demo)
DEMO_DOMAINS = ("marketing", "landing", "commerce", "learning", "tags", "segments", "scoring")


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


@crm.command("sync-reference")
@with_appcontext
def sync_reference_command():
    """Add the missing dictionaries and config items (a deploy step: never changes existing ones)."""
    from app.extensions import db
    from app.services.reference import sync_reference

    added = sync_reference(db.session)
    db.session.commit()
    for kind, names in added.items():
        click.echo(f"{kind.replace('_', ' ')} added: {', '.join(names) or 'none'}")


@crm.command("seed-demo")
@click.option("--size", type=click.Choice(["small", "large"]), default="small", show_default=True,
              help="large: also 90 days of history (30,000 opportunities, follow-ups, calls, SMS)")
@click.option("--count", type=click.IntRange(1), default=None, hidden=True)  # opportunities of --size large
@with_appcontext
def seed_demo_command(size, count):
    """Sync the reference data, then load the demo organisation, people and activity (safe to run again)."""
    from app.extensions import db
    from app.services import audit
    from app.services.seed import demo_logins, seed_demo

    with audit.acting_as(None, "seed-demo"):
        counts = seed_demo(db.session, current_app.appbuilder)
        if size == "large":
            from app.services.seed_large import LARGE_COUNT, seed_large

            counts["large"] = seed_large(db.session, count=count or LARGE_COUNT)
        # The systems around the sales domain, after the opportunities they attach to (campaigns first:
        # landing pages join them, orders and learning activity join opportunities and customers), then the
        # big-data layer over all of it (tags, segments over tags, the win probability learnt from both).
        for name in DEMO_DOMAINS:
            counts.update(importlib.import_module(f"app.services.seed_{name}").seed_demo(db.session))
            db.session.commit()
        # The dashboard reads aggregates: bring them up to date now rather than at the scheduler's next turn.
        from app.clock import utcnow
        from app.services.dashboard_refresh import refresh

        refresh(db.session, utcnow())
    click.echo("demo data: " + json.dumps(counts, ensure_ascii=False))
    for username, password, role in demo_logins():
        click.echo(f"  {username:<14} {password:<16} {role}")


@crm.command("refresh-dashboard")
@click.option("--full", is_flag=True, help="rebuild every day instead of the days that changed")
@with_appcontext
def refresh_dashboard_command(full):
    """Bring the dashboard's daily aggregates up to date now (the scheduler does it every two minutes)."""
    from app.jobs.dashboard import refresh_dashboard_job

    done = refresh_dashboard_job(full=full)
    if done is None:
        raise click.ClickException("another refresh is running")
    click.echo(json.dumps({k: len(v) if isinstance(v, list) else v for k, v in done.items()}))


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


def run_command(actor: str, work):
    """Run a service command as `actor` (named in the audit log) and commit; a refusal rolls back and ends
    the command with its field and message."""
    from app.extensions import db
    from app.services import audit
    from app.services.errors import DomainError

    try:
        with audit.acting_as(None, actor):
            result = work()
            db.session.commit()
    except DomainError as exc:
        db.session.rollback()
        raise click.ClickException(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None
    return result


from app import cli_calls, cli_dispatch, cli_onboarding  # noqa: E402, F401  (`crm call-config`, `crm dispatch-rule`, `crm onboard`)


@crm.command("jobs")
@click.option("--status", default=None, help="queued, running, completed, failed or cancelled")
@click.option("--limit", default=20, show_default=True)
@with_appcontext
def jobs_command(status, limit):
    """List the newest job runs (the Jobs page, for operators)."""
    from sqlalchemy import select

    from app.clock import format_datetime
    from app.extensions import db
    from app.models.jobs import JobRun

    stmt = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(JobRun.status == status)
    for run in db.session.scalars(stmt):
        target = f"{run.target_type}#{run.target_id}" if run.target_type else "-"
        total = run.total if run.total is not None else "?"
        click.echo(f"#{run.id} {run.kind} {target} {run.status} {run.done}+{run.failed}/{total} "
                   f"attempts={run.attempts} created={format_datetime(run.created_at)}"
                   + (f" error={run.last_error}" if run.last_error else ""))


@crm.command("watchdog")
@with_appcontext
def watchdog_command():
    """Run the job runner's watchdog once (the scheduler runs it every minute)."""
    from app.jobs.runner import watchdog_job

    actions = watchdog_job()
    for action in actions:
        click.echo(action)
    if not actions:
        click.echo("no dead job runs")
