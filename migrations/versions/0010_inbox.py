"""inbox_notification: the notification centre (app.models.inbox, app.services.inbox)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 01:45:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'inbox_notification',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('recipient_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('msgid', sa.String(length=255), nullable=False),
        sa.Column('params', sa.Text(), nullable=True),
        sa.Column('subject_type', sa.String(length=40), nullable=True),
        sa.Column('subject_id', sa.Integer(), nullable=True),
        sa.Column('dedupe_key', sa.String(length=120), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('read_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['recipient_id'], ['ab_user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('inbox_notification', schema=None) as batch_op:
        batch_op.create_index('ux_inbox_notification_dedupe', ['recipient_id', 'kind', 'dedupe_key'],
                              unique=True)
        batch_op.create_index('ix_inbox_notification_recipient_created', ['recipient_id', 'created_at'],
                              unique=False)
        batch_op.create_index('ix_inbox_notification_recipient_read', ['recipient_id', 'read_at'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('inbox_notification', schema=None) as batch_op:
        batch_op.drop_index('ix_inbox_notification_recipient_read')
        batch_op.drop_index('ix_inbox_notification_recipient_created')
        batch_op.drop_index('ux_inbox_notification_dedupe')
    op.drop_table('inbox_notification')
