"""dashboard aggregate indexes by person: dash_activity_day (employee_id, day), dash_cohort_day and
dash_first_contact_day (owner_id, day)

The workbench sets a salesperson's figures beside their team's median: those queries read a handful of
people over 30 days. By day alone they read every row of the period (about 1,000,000 of
dash_activity_day at 1,000,000 opportunities) to keep a few thousand; by person first, only those.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 05:30:00
"""
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

INDEXES = {
    'ix_dash_activity_day_employee_day': ('dash_activity_day', ['employee_id', 'day']),
    'ix_dash_cohort_day_owner_day': ('dash_cohort_day', ['owner_id', 'day']),
    'ix_dash_first_contact_day_owner_day': ('dash_first_contact_day', ['owner_id', 'day']),
}


def upgrade():
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns)


def downgrade():
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
