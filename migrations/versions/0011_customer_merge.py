"""customer.merged_into_id, merged_at: customer merge (app.services.customers)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 02:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('merged_into_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('merged_at', sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_customer_merged_into_id'), ['merged_into_id'], unique=False)
        batch_op.create_foreign_key('fk_customer_merged_into_id_customer', 'customer', ['merged_into_id'],
                                    ['id'])


def downgrade():
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.drop_constraint('fk_customer_merged_into_id_customer', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_customer_merged_into_id'))
        batch_op.drop_column('merged_at')
        batch_op.drop_column('merged_into_id')
