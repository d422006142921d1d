"""opportunity list indexes: (owner_id, id), (org_unit_id, id), (stage_id, id), (pool_id, id) and
(owner_id, status, id) in place of (owner_id, status)

The first page and the keyset pages of the opportunity list (app/views/fast_list.py) in a salesperson's
or a team's scope, filtered by stage, pool or status, are read in id order from one index instead of
sorting every matching row, or walking the primary key past rows of everybody else.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 05:00:00
"""
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

INDEXES = {
    'ix_opportunity_owner_id_id': ['owner_id', 'id'],
    'ix_opportunity_owner_status_id': ['owner_id', 'status', 'id'],
    'ix_opportunity_org_unit_id_id': ['org_unit_id', 'id'],
    'ix_opportunity_stage_id_id': ['stage_id', 'id'],
    'ix_opportunity_pool_id_id': ['pool_id', 'id'],
}


def upgrade():
    for name, columns in INDEXES.items():
        op.create_index(name, 'opportunity', columns)
    op.drop_index('ix_opportunity_owner_status', table_name='opportunity')  # a prefix of owner_status_id


def downgrade():
    op.create_index('ix_opportunity_owner_status', 'opportunity', ['owner_id', 'status'])
    for name in INDEXES:
        op.drop_index(name, table_name='opportunity')
