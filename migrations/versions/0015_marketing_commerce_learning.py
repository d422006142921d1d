"""the systems around the sales domain: marketing campaigns with daily spend, landing pages, chats from the
public widget, products and orders with the shop's webhook events, learning activity; the campaign and
landing page of each lead and the (first-touch) campaign of each opportunity

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 07:05:00
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('shop_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=100), nullable=False),
    sa.Column('event_type', sa.String(length=30), nullable=False),
    sa.Column('order_number', sa.String(length=64), nullable=True),
    sa.Column('occurred_at', sa.DateTime(), nullable=True),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('detail', sa.String(length=255), nullable=True),
    sa.Column('payload', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id')
    )
    with op.batch_alter_table('shop_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shop_event_order_number'), ['order_number'], unique=False)

    op.create_table('learning_activity',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=100), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('course', sa.String(length=200), nullable=False),
    sa.Column('lesson', sa.String(length=200), nullable=True),
    sa.Column('attended', sa.Boolean(), nullable=True),
    sa.Column('progress', sa.Integer(), nullable=True),
    sa.Column('occurred_at', sa.DateTime(), nullable=False),
    sa.Column('imported_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('external_id')
    )
    with op.batch_alter_table('learning_activity', schema=None) as batch_op:
        batch_op.create_index('ix_learning_activity_customer_time', ['customer_id', 'occurred_at'], unique=False)

    op.create_table('learning_summary',
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('lessons_attended', sa.Integer(), nullable=False),
    sa.Column('lessons_missed', sa.Integer(), nullable=False),
    sa.Column('courses', sa.Integer(), nullable=False),
    sa.Column('progress', sa.Integer(), nullable=True),
    sa.Column('last_active_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
    sa.PrimaryKeyConstraint('customer_id')
    )
    with op.batch_alter_table('learning_summary', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_learning_summary_last_active_at'), ['last_active_at'], unique=False)

    op.create_table('product',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('product_line_id', sa.Integer(), nullable=False),
    sa.Column('list_price', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['product_line_id'], ['dict_item.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    op.create_table('marketing_campaign',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('channel_id', sa.Integer(), nullable=False),
    sa.Column('product_line_id', sa.Integer(), nullable=True),
    sa.Column('budget', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('start_date', sa.Date(), nullable=False),
    sa.Column('end_date', sa.Date(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['channel_id'], ['dict_item.id'], ),
    sa.ForeignKeyConstraint(['created_by_id'], ['employee.id'], name='fk_mkt_campaign_creator'),
    sa.ForeignKeyConstraint(['product_line_id'], ['dict_item.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('marketing_campaign', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_marketing_campaign_channel_id'), ['channel_id'], unique=False)

    op.create_table('campaign_spend',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('impressions', sa.Integer(), nullable=True),
    sa.Column('clicks', sa.Integer(), nullable=True),
    sa.Column('origin', sa.String(length=10), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['marketing_campaign.id'], ),
    sa.ForeignKeyConstraint(['created_by_id'], ['employee.id'], name='fk_campaign_spend_creator'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('campaign_id', 'day', name='uq_campaign_spend_day')
    )
    op.create_table('landing_page',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=80), nullable=False),
    sa.Column('title', sa.String(length=80), nullable=False),
    sa.Column('keywords', sa.String(length=200), nullable=True),
    sa.Column('description', sa.String(length=300), nullable=True),
    sa.Column('heading', sa.String(length=120), nullable=True),
    sa.Column('content', sa.Text(), nullable=True),
    sa.Column('image_url', sa.String(length=500), nullable=True),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('product_line_id', sa.Integer(), nullable=False),
    sa.Column('chat_enabled', sa.Boolean(), nullable=False),
    sa.Column('published', sa.Boolean(), nullable=False),
    sa.Column('published_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['marketing_campaign.id'], ),
    sa.ForeignKeyConstraint(['product_line_id'], ['dict_item.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('slug')
    )
    with op.batch_alter_table('landing_page', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_landing_page_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('sales_order',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=64), nullable=False),
    sa.Column('opportunity_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('approval', sa.String(length=10), nullable=False),
    sa.Column('list_total', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('final_total', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('origin', sa.String(length=10), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('approved_by_id', sa.Integer(), nullable=True),
    sa.Column('approved_at', sa.DateTime(), nullable=True),
    sa.Column('approval_note', sa.String(length=255), nullable=True),
    sa.Column('paid_at', sa.DateTime(), nullable=True),
    sa.Column('refunded_at', sa.DateTime(), nullable=True),
    sa.Column('cancelled_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['approved_by_id'], ['employee.id'], name='fk_order_approver'),
    sa.ForeignKeyConstraint(['created_by_id'], ['employee.id'], name='fk_order_creator'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
    sa.ForeignKeyConstraint(['opportunity_id'], ['opportunity.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('number')
    )
    with op.batch_alter_table('sales_order', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sales_order_approval'), ['approval'], unique=False)
        batch_op.create_index(batch_op.f('ix_sales_order_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sales_order_opportunity_id'), ['opportunity_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sales_order_paid_at'), ['paid_at'], unique=False)

    op.create_table('chat_session',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('landing_page_id', sa.Integer(), nullable=True),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('lead_id', sa.Integer(), nullable=True),
    sa.Column('opportunity_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('last_message_at', sa.DateTime(), nullable=True),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['campaign_id'], ['marketing_campaign.id'], ),
    sa.ForeignKeyConstraint(['landing_page_id'], ['landing_page.id'], ),
    sa.ForeignKeyConstraint(['lead_id'], ['lead.id'], ),
    sa.ForeignKeyConstraint(['opportunity_id'], ['opportunity.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token')
    )
    with op.batch_alter_table('chat_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_session_last_message_at'), ['last_message_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_chat_session_lead_id'), ['lead_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_chat_session_opportunity_id'), ['opportunity_id'], unique=False)

    op.create_table('sales_order_item',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('list_price', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('final_price', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['sales_order.id'], ),
    sa.ForeignKeyConstraint(['product_id'], ['product.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sales_order_item', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sales_order_item_order_id'), ['order_id'], unique=False)

    op.create_table('chat_message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('sender', sa.String(length=10), nullable=False),
    sa.Column('employee_id', sa.Integer(), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['employee_id'], ['employee.id'], name='fk_chat_message_employee'),
    sa.ForeignKeyConstraint(['session_id'], ['chat_session.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('chat_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_message_session_id'), ['session_id'], unique=False)

    with op.batch_alter_table('lead', schema=None) as batch_op:
        batch_op.add_column(sa.Column('campaign_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('landing_page_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_lead_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_lead_landing_page_id'), ['landing_page_id'], unique=False)
        batch_op.create_foreign_key('fk_lead_landing_page_id', 'landing_page', ['landing_page_id'], ['id'])
        batch_op.create_foreign_key('fk_lead_campaign_id', 'marketing_campaign', ['campaign_id'], ['id'])

    with op.batch_alter_table('opportunity', schema=None) as batch_op:
        batch_op.add_column(sa.Column('campaign_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_opportunity_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_foreign_key('fk_opportunity_campaign_id', 'marketing_campaign', ['campaign_id'], ['id'])



def downgrade():
    with op.batch_alter_table('opportunity', schema=None) as batch_op:
        batch_op.drop_constraint('fk_opportunity_campaign_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_opportunity_campaign_id'))
        batch_op.drop_column('campaign_id')

    with op.batch_alter_table('lead', schema=None) as batch_op:
        batch_op.drop_constraint('fk_lead_campaign_id', type_='foreignkey')
        batch_op.drop_constraint('fk_lead_landing_page_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_lead_landing_page_id'))
        batch_op.drop_index(batch_op.f('ix_lead_campaign_id'))
        batch_op.drop_column('landing_page_id')
        batch_op.drop_column('campaign_id')

    with op.batch_alter_table('chat_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chat_message_session_id'))

    op.drop_table('chat_message')
    with op.batch_alter_table('sales_order_item', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sales_order_item_order_id'))

    op.drop_table('sales_order_item')
    with op.batch_alter_table('chat_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chat_session_opportunity_id'))
        batch_op.drop_index(batch_op.f('ix_chat_session_lead_id'))
        batch_op.drop_index(batch_op.f('ix_chat_session_last_message_at'))

    op.drop_table('chat_session')
    with op.batch_alter_table('sales_order', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sales_order_paid_at'))
        batch_op.drop_index(batch_op.f('ix_sales_order_opportunity_id'))
        batch_op.drop_index(batch_op.f('ix_sales_order_customer_id'))
        batch_op.drop_index(batch_op.f('ix_sales_order_approval'))

    op.drop_table('sales_order')
    with op.batch_alter_table('landing_page', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_landing_page_campaign_id'))

    op.drop_table('landing_page')
    op.drop_table('campaign_spend')
    with op.batch_alter_table('marketing_campaign', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_marketing_campaign_channel_id'))

    op.drop_table('marketing_campaign')
    op.drop_table('product')
    with op.batch_alter_table('learning_summary', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_learning_summary_last_active_at'))

    op.drop_table('learning_summary')
    with op.batch_alter_table('learning_activity', schema=None) as batch_op:
        batch_op.drop_index('ix_learning_activity_customer_time')

    op.drop_table('learning_activity')
    with op.batch_alter_table('shop_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shop_event_order_number'))

    op.drop_table('shop_event')
