"""the model registry (versions, channels, release events, eval results); canary channel per
conversation, duel answers and vote comparisons

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_versions',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('parent', sa.String(length=200), nullable=True),
    sa.Column('stage', sa.String(length=32), nullable=True),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('data_hash', sa.String(length=64), nullable=True),
    sa.Column('config', sa.Text(), nullable=True),
    sa.Column('metrics', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=320), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'version')
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_versions_name'), ['name'], unique=False)
    op.create_table('channels',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('percent', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', 'channel')
    )
    op.create_table('release_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('previous', sa.String(length=64), nullable=True),
    sa.Column('percent', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=320), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('release_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_release_events_name'), ['name'], unique=False)
    op.create_table('eval_results',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('model_version', sa.String(length=200), nullable=False),
    sa.Column('suite', sa.String(length=64), nullable=False),
    sa.Column('suite_hash', sa.String(length=64), nullable=False),
    sa.Column('settings', sa.String(length=200), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('ci_low', sa.Float(), nullable=True),
    sa.Column('ci_high', sa.Float(), nullable=True),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('eval_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eval_results_model_version'), ['model_version'], unique=False)
    with op.batch_alter_table('conversations') as batch:
        batch.add_column(sa.Column('channel', sa.String(length=16), nullable=True))
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('duel_id', sa.String(length=32), nullable=True))
        batch.create_index(batch.f('ix_messages_duel_id'), ['duel_id'], unique=False)
    with op.batch_alter_table('comparisons') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='regenerate'))


def downgrade() -> None:
    with op.batch_alter_table('comparisons') as batch:
        batch.drop_column('kind')
    with op.batch_alter_table('messages') as batch:
        batch.drop_index(batch.f('ix_messages_duel_id'))
        batch.drop_column('duel_id')
    with op.batch_alter_table('conversations') as batch:
        batch.drop_column('channel')
    op.drop_table('eval_results')
    op.drop_table('release_events')
    op.drop_table('channels')
    op.drop_table('model_versions')
