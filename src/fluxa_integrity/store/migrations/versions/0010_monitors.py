"""monitors: interval rows and learned field profiles (issue 11, S10-S12)

Revision ID: 0010_monitors
Revises: 0009_service
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_monitors'
down_revision = '0009_service'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('monitor_intervals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('database', sa.String(length=200), nullable=False),
    sa.Column('collection', sa.String(length=200), nullable=False),
    sa.Column('start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('hour', sa.Integer(), nullable=False),
    sa.Column('complete', sa.Boolean(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('findings', sa.JSON(), nullable=False),
    sa.Column('evaluated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('check_run_id', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('database', 'collection', 'start', name='uq_monitor_intervals_key')
    )
    op.create_index('ix_monitor_intervals_start', 'monitor_intervals', ['start'])
    op.create_table('monitor_profiles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('database', sa.String(length=200), nullable=False),
    sa.Column('collection', sa.String(length=200), nullable=False),
    sa.Column('learned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('docs', sa.Integer(), nullable=False),
    sa.Column('fields', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('database', 'collection', name='uq_monitor_profiles_key')
    )


def downgrade() -> None:
    op.drop_table('monitor_profiles')
    op.drop_index('ix_monitor_intervals_start', 'monitor_intervals')
    op.drop_table('monitor_intervals')
