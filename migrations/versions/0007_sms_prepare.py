"""sms prepare: sms_message without foreign keys, trimmed indexes

Campaign preparation writes one sms_message row per recipient (a million for a large campaign). On
PostgreSQL each of the three foreign keys is a trigger and a lookup per inserted row, which cost more
than the insert itself; the ids are written by the application from rows it has just read, and a channel
in use cannot be deleted (the console checks). Indexes kept are those queries use: the unique uid, the
unique (campaign, phone), (campaign, status) for claiming and progress, (status, send_after) for
notifications; provider_id is only looked up when set (receipts), so its index leaves out the NULLs of
unsent messages; customer_id was never queried.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 02:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_FKS = (("campaign_id", "sms_campaign"), ("template_id", "sms_template"), ("channel_id", "sms_channel"))
# SQLite's foreign keys have no names: batch mode names the reflected ones by this convention.
_NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
_NOT_NULL = sa.text("provider_id IS NOT NULL")


def _fk_names(bind) -> dict[str, str]:
    """The foreign keys' names as reflected (an unnamed SQLite one by the batch naming convention)."""
    names = {}
    for fk in sa.inspect(bind).get_foreign_keys("sms_message"):
        col, table = fk["constrained_columns"][0], fk["referred_table"]
        if (col, table) in _FKS:
            names[col] = fk["name"] or f"fk_sms_message_{col}_{table}"
    return names


def upgrade():
    names = _fk_names(op.get_bind())
    with op.batch_alter_table('sms_message', schema=None, naming_convention=_NAMING) as batch_op:
        for name in names.values():
            batch_op.drop_constraint(name, type_='foreignkey')
        batch_op.drop_index('ix_sms_message_customer_id')
        batch_op.drop_index('ix_sms_message_provider_id')
        batch_op.create_index('ix_sms_message_provider_id', ['provider_id'], unique=False,
                              sqlite_where=_NOT_NULL, postgresql_where=_NOT_NULL)


def downgrade():
    with op.batch_alter_table('sms_message', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_message_provider_id', sqlite_where=_NOT_NULL, postgresql_where=_NOT_NULL)
        batch_op.create_index('ix_sms_message_provider_id', ['provider_id'], unique=False)
        batch_op.create_index('ix_sms_message_customer_id', ['customer_id'], unique=False)
        for col, table in _FKS:
            batch_op.create_foreign_key(f"sms_message_{col}_fkey", table, [col], ['id'])
