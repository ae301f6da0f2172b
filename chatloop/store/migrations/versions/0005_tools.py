"""tools in conversations: the tools a conversation offers, tool messages (call id, the call as run)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tools', sa.Text(), nullable=True))
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tool_call_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('tool_result', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('tool_result')
        batch_op.drop_column('tool_call_id')
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_column('tools')
