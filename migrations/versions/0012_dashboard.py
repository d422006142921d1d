"""dash_* daily aggregates of the manager dashboard, and the indexes its refresh and pool figures read by

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 04:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

_DIMS = ('org_unit_id', 'product_line_id', 'source_id')


def _dims(day=True):
    cols = [sa.Column('id', sa.Integer(), nullable=False)]
    if day:
        cols.append(sa.Column('day', sa.Date(), nullable=False))
    cols += [sa.Column(name, sa.Integer(), nullable=True) for name in _DIMS]
    cols.append(sa.Column('campaign', sa.String(length=100), nullable=True))
    return cols


def _counts(*names):
    return [sa.Column(name, sa.Integer(), nullable=False) for name in names]


def upgrade():
    op.create_table('dash_cohort_day', *_dims(), sa.Column('owner_id', sa.Integer(), nullable=True),
                    *_counts('leads', 'assigned', 'contacted', 'contacted_24h', 'won', 'lost'),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_dash_cohort_day_day', 'dash_cohort_day', ['day'])
    op.create_table('dash_first_contact_day', *_dims(), sa.Column('owner_id', sa.Integer(), nullable=True),
                    *_counts('bucket', 'n'), sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_dash_first_contact_day_day', 'dash_first_contact_day', ['day'])
    op.create_table('dash_activity_day', *_dims(), sa.Column('employee_id', sa.Integer(), nullable=True),
                    *_counts('follow_ups', 'dispatched', 'recycled', 'dials', 'connected', 'talk_seconds', 'qa_scored',
                             'qa_score_sum'),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_dash_activity_day_day', 'dash_activity_day', ['day'])
    op.create_table('dash_idle_snapshot', *_dims(day=False), sa.Column('owner_id', sa.Integer(), nullable=True),
                    *_counts('bucket', 'n'), sa.PrimaryKeyConstraint('id'))
    op.create_table('dash_sms_day', sa.Column('day', sa.Date(), nullable=False),
                    *_counts('sent', 'delivered', 'failed', 'segments'),
                    sa.Column('cost', sa.Numeric(precision=14, scale=4), nullable=False),
                    sa.PrimaryKeyConstraint('day'))
    op.create_table('dash_refresh_state', sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('as_of', sa.DateTime(), nullable=True), sa.Column('mark', sa.DateTime(), nullable=True),
                    sa.Column('id_marks', sa.Text(), nullable=True),
                    sa.Column('days_refreshed', sa.Integer(), nullable=False),
                    sa.Column('version', sa.Integer(), nullable=False), sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_opportunity_updated_at', 'opportunity', ['updated_at'])
    op.create_index('ix_opportunity_created_at', 'opportunity', ['created_at'])
    op.create_index('ix_follow_up_created_at', 'follow_up', ['created_at'])
    op.create_index('ix_follow_up_opportunity_created', 'follow_up', ['opportunity_id', 'created_at'])
    op.create_index('ix_assignment_log_reason_created', 'assignment_log', ['reason', 'created_at'])
    op.create_index('ix_call_record_updated_at', 'call_record', ['updated_at'])
    op.create_index('ix_qa_inspection_updated_at', 'qa_inspection', ['updated_at'])
    op.create_index('ix_qa_inspection_scored_at', 'qa_inspection', ['scored_at'])
    op.create_index('ix_opportunity_pooled', 'opportunity', ['pool_id'],
                    postgresql_where=sa.text("status = 'pooled'"), sqlite_where=sa.text("status = 'pooled'"))
    op.create_index('ix_sms_message_sent_at', 'sms_message', ['sent_at'],
                    postgresql_where=sa.text('sent_at IS NOT NULL'), sqlite_where=sa.text('sent_at IS NOT NULL'))


def downgrade():
    for name, table in (('ix_sms_message_sent_at', 'sms_message'), ('ix_opportunity_pooled', 'opportunity'), ('ix_qa_inspection_scored_at', 'qa_inspection'),
                        ('ix_qa_inspection_updated_at', 'qa_inspection'),
                        ('ix_call_record_updated_at', 'call_record'),
                        ('ix_assignment_log_reason_created', 'assignment_log'),
                        ('ix_follow_up_opportunity_created', 'follow_up'), ('ix_follow_up_created_at', 'follow_up'),
                        ('ix_opportunity_created_at', 'opportunity'), ('ix_opportunity_updated_at', 'opportunity')):
        op.drop_index(name, table_name=table)
    op.drop_table('dash_refresh_state')
    op.drop_table('dash_sms_day')
    op.drop_table('dash_idle_snapshot')
    op.drop_index('ix_dash_activity_day_day', table_name='dash_activity_day')
    op.drop_table('dash_activity_day')
    op.drop_index('ix_dash_first_contact_day_day', table_name='dash_first_contact_day')
    op.drop_table('dash_first_contact_day')
    op.drop_index('ix_dash_cohort_day_day', table_name='dash_cohort_day')
    op.drop_table('dash_cohort_day')
