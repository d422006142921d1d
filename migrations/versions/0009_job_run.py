"""job_run: one row per run of a long job (the job runner, app.services.runner)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 00:50:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# At most one queued or running run per kind and target.
_ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade():
    op.create_table(
        'job_run',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('target_type', sa.String(length=40), nullable=True),
        sa.Column('target_id', sa.Integer(), nullable=True),
        sa.Column('started_by_fk', sa.Integer(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('total', sa.Integer(), nullable=True),
        sa.Column('done', sa.Integer(), nullable=False),
        sa.Column('failed', sa.Integer(), nullable=False),
        sa.Column('position', sa.Text(), nullable=True),
        sa.Column('params', sa.Text(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('rq_job_id', sa.String(length=64), nullable=True),
        sa.Column('queue', sa.String(length=20), nullable=False),
        sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=True),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('summary', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['started_by_fk'], ['ab_user.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('job_run', schema=None) as batch_op:
        batch_op.create_index('ix_job_run_status_created', ['status', 'created_at'], unique=False)
        batch_op.create_index('ix_job_run_target', ['target_type', 'target_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_run_started_by_fk'), ['started_by_fk'], unique=False)
        batch_op.create_index('ux_job_run_active_target', ['kind', 'target_type', 'target_id'], unique=True,
                              sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)


def downgrade():
    with op.batch_alter_table('job_run', schema=None) as batch_op:
        batch_op.drop_index('ux_job_run_active_target', sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)
        batch_op.drop_index(batch_op.f('ix_job_run_started_by_fk'))
        batch_op.drop_index('ix_job_run_target')
        batch_op.drop_index('ix_job_run_status_created')
    op.drop_table('job_run')
