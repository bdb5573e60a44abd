"""recovery plans (issue 10): one row per plan a recovery recipe made

Revision ID: 0007_recovery_plans
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0007_recovery_plans'
down_revision = '0001'
branch_labels = ('recovery',)
depends_on = None


def upgrade() -> None:
    op.create_table('recovery_plans',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('recipe', sa.String(length=100), nullable=False),
    sa.Column('database', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('plan_dir', sa.Text(), nullable=False),
    sa.Column('changes_sha256', sa.String(length=64), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=True),
    sa.Column('actor', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('undone_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_recovery_plans_database_status', 'recovery_plans', ['database', 'status'])


def downgrade() -> None:
    op.drop_index('ix_recovery_plans_database_status', table_name='recovery_plans')
    op.drop_table('recovery_plans')
