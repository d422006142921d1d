"""sms_message: partial indexes, so that a campaign's rows skip what only notifications and sent messages use

A campaign writes a million sms_message rows; three unique / secondary indexes held an entry for each that
no query reads at that point:
- uid (the provider's correlation id) is now made when a campaign message is first claimed for sending, so
  the column becomes nullable and its unique index covers only the rows that have one;
- event_key (set only by notifications, for idempotency): a unique index on the non-NULL keys;
- (status, send_after) — the notification reconciler's "sending with an expired lease" — covers only rows
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

# An unnamed SQLite unique constraint: batch mode names the reflected one by this convention.
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
_HAS_UID = sa.text("uid IS NOT NULL")
_KEYED = sa.text("event_key IS NOT NULL")
_NOTIFICATION = sa.text("campaign_id IS NULL")


def _unique_constraints(bind) -> dict[str, str]:
    """Column → name of the single-column unique constraints on uid and event_key."""
    names = {}
    for uq in sa.inspect(bind).get_unique_constraints("sms_message"):
        if uq["column_names"] in (["uid"], ["event_key"]):
            column = uq["column_names"][0]
            names[column] = uq["name"] or f"uq_sms_message_{column}"
    return names


def upgrade():
    names = _unique_constraints(op.get_bind())
    with op.batch_alter_table('sms_message', schema=None, naming_convention=_NAMING) as batch_op:
        for name in names.values():
            batch_op.drop_constraint(name, type_='unique')
        batch_op.alter_column('uid', existing_type=sa.String(length=32), nullable=True)
        batch_op.drop_index('ix_sms_message_status_after')
    with op.batch_alter_table('sms_message', schema=None) as batch_op:
        batch_op.create_index('uq_sms_message_uid', ['uid'], unique=True,
                              sqlite_where=_HAS_UID, postgresql_where=_HAS_UID)
        batch_op.create_index('uq_sms_message_event_key', ['event_key'], unique=True,
                              sqlite_where=_KEYED, postgresql_where=_KEYED)
        batch_op.create_index('ix_sms_message_status_after', ['status', 'send_after'], unique=False,
                              sqlite_where=_NOTIFICATION, postgresql_where=_NOTIFICATION)


def downgrade():
    # Campaign messages not yet sent have no uid: give them one, as preparation used to.
    op.execute(sa.text("UPDATE sms_message SET uid = 'm' || CAST(id AS VARCHAR) WHERE uid IS NULL"))
    with op.batch_alter_table('sms_message', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_message_status_after', sqlite_where=_NOTIFICATION,
                            postgresql_where=_NOTIFICATION)
        batch_op.drop_index('uq_sms_message_event_key', sqlite_where=_KEYED, postgresql_where=_KEYED)
        batch_op.drop_index('uq_sms_message_uid', sqlite_where=_HAS_UID, postgresql_where=_HAS_UID)
    with op.batch_alter_table('sms_message', schema=None) as batch_op:
        batch_op.alter_column('uid', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_index('ix_sms_message_status_after', ['status', 'send_after'], unique=False)
        batch_op.create_unique_constraint('uq_sms_message_uid', ['uid'])
        batch_op.create_unique_constraint('sms_message_event_key_key', ['event_key'])
