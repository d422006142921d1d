"""What the service commands that create settings rows share (app.services.dispatch_rules' SaveCommand,
the `crm` commands over app.services.calls.config)."""

from __future__ import annotations


def apply_column_defaults(item) -> None:
    """Give a new `item` its columns' scalar defaults, which SQLAlchemy would only apply at INSERT, so
    that the rules validate what will be written."""
    for column in type(item).__table__.columns:
        default = column.default
        if default is not None and default.is_scalar and getattr(item, column.key) is None:
            setattr(item, column.key, default.arg)
