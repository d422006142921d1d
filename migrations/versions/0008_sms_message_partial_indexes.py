"""sms_message: partial indexes for what only notifications use

A campaign writes a million sms_message rows; two indexes held an entry for each that no query reads:
event_key (set only by notifications, for idempotency) becomes a unique index on the non-NULL keys, and
(status, send_after) — the notification reconciler's "sending with an expired lease" — covers only rows
without a campaign (the campaign sender goes by (campaign_id, status)).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 05:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# SQLite's unique constraint has no name: batch mode names the reflected one by this convention.
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
_KEYED = sa.text("event_key IS NOT NULL")
_NOTIFICATION = sa.text("campaign_id IS NULL")


def _event_key_constraint(bind) -> str:
    for uq in sa.inspect(bind).get_unique_constraints("sms_message"):
        if uq["column_names"] == ["event_key"]:
            return uq["name"] or "uq_sms_message_event_key"
    raise RuntimeError("sms_message has no unique constraint on event_key")


def upgrade():
    name = _event_key_constraint(op.get_bind())
    with op.batch_alter_table('sms_message', schema=None, naming_convention=_NAMING) as batch_op:
        batch_op.drop_constraint(name, type_='unique')
        batch_op.drop_index('ix_sms_message_status_after')
    with op.batch_alter_table('sms_message', schema=None) as batch_op:
        batch_op.create_index('uq_sms_message_event_key', ['event_key'], unique=True,
                              sqlite_where=_KEYED, postgresql_where=_KEYED)
        batch_op.create_index('ix_sms_message_status_after', ['status', 'send_after'], unique=False,
                              sqlite_where=_NOTIFICATION, postgresql_where=_NOTIFICATION)


def downgrade():
    with op.batch_alter_table('sms_message', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_message_status_after', sqlite_where=_NOTIFICATION,
                            postgresql_where=_NOTIFICATION)
        batch_op.drop_index('uq_sms_message_event_key', sqlite_where=_KEYED, postgresql_where=_KEYED)
        batch_op.create_index('ix_sms_message_status_after', ['status', 'send_after'], unique=False)
        batch_op.create_unique_constraint('sms_message_event_key_key', ['event_key'])
