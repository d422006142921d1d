"""`flask crm call-config KIND KEY --set field=value …`: create or change outbound-call configuration
from a deploy script, e.g.

    flask crm call-config interface 主线路 --set provider=http --set base_url=https://calls.example.com \
        --set secret_env=CALLS_SECRET --set callback_secret_env=CALLS_CALLBACK_SECRET
    flask crm call-config line 北京线路 --set interface=主线路 --set concurrency_limit=20
    flask crm call-config number 01058000001 --set line=北京线路 --set area=北京

It saves through app.services.calls.config `save` — the rules the admin forms and the REST API run — so a
setting refused in the browser is refused here too, with the same message. Running it again with the same
settings changes nothing. Secrets come from environment variables (`secret_env`, `callback_secret_env`),
never from the command line.
"""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from app.cli import crm, run_command
from app.models.calls import CallLine, CallNumber, OutboundInterface, Seat
from app.models.employee import Employee

# kind: (model, the column KEY names)
KINDS = {
    "interface": (OutboundInterface, "name"),
    "line": (CallLine, "name"),
    "number": (CallNumber, "number"),
    "seat": (Seat, "seat_no"),
}
# a relation set by the other row's key: field: (model, its key column)
RELATIONS = {
    "interface": (OutboundInterface, "name"),
    "line": (CallLine, "name"),
    "employee": (Employee, "employee_no"),
}
NOT_SETTABLE = {"id", "created_at", "updated_at", "encrypted_secret", "encrypted_callback_secret"}
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _find(session, model, column: str, key):
    from sqlalchemy import select

    return session.scalar(select(model).where(getattr(model, column) == key))


def _value(session, model, field: str, raw: str):
    """`raw` (from --set field=raw) as the value of `model.field`; an empty value clears it."""
    if field in RELATIONS and field in model.__mapper__.relationships:
        other, column = RELATIONS[field]
        if not raw:
            return None
        found = _find(session, other, column, raw)
        if found is None:
            raise click.BadParameter(f"no {field} {raw!r}", param_hint="--set")
        return found
    column = model.__table__.columns.get(field)
    if column is None or field in NOT_SETTABLE or column.foreign_keys:
        raise click.BadParameter(f"{field!r} is not a setting of a {model.__name__}", param_hint="--set")
    if raw == "":
        return None
    kind = column.type.python_type
    if kind is bool:
        if raw.lower() not in TRUE + FALSE:
            raise click.BadParameter(f"{field}: true or false", param_hint="--set")
        return raw.lower() in TRUE
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise click.BadParameter(f"{field}: a whole number", param_hint="--set") from None
    return raw


@crm.command("call-config")
@click.argument("kind", type=click.Choice(list(KINDS)))
@click.argument("key")
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE",
              help="A column to set (repeatable); interface, line and employee by name / number.")
@with_appcontext
def call_config_command(kind, key, settings):
    """Create the KIND (interface, line, number, seat) named KEY, or change the given settings of it."""
    from app.extensions import db
    from app.services.calls import config
    from app.services.commands import apply_column_defaults
    from app.services.phones import normalise_phone

    model, key_column = KINDS[kind]
    values = {}
    for setting in settings:
        field, sep, raw = setting.partition("=")
        if not sep or not field.strip():
            raise click.BadParameter(f"{setting!r}: write FIELD=VALUE", param_hint="--set")
        values[field.strip()] = _value(db.session, model, field.strip(), raw.strip())

    def save():
        wanted = normalise_phone(key, field="number") if kind == "number" else key.strip()
        item = _find(db.session, model, key_column, wanted)
        created = item is None
        if created:
            item = model(**{key_column: key})
            apply_column_defaults(item)
        for field, value in values.items():
            setattr(item, field, value)
        return config.save(db.session, item), created

    item, created = run_command("crm call-config", save)
    click.echo(f"{kind} #{item.id} {getattr(item, key_column)}: {'created' if created else 'updated'}")
