"""service: job history, leases, serve instances and run-now requests (issue 11)

Revision ID: 0009_service
Revises: 0005_archive_state, 0008_containment (merges the heads: one head again)
"""
from alembic import op
import sqlalchemy as sa


revision = '0009_service'
down_revision = ('0005_archive_state', '0008_containment')
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('service_job_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job', sa.String(length=100), nullable=False),
    sa.Column('occurrence_key', sa.String(length=300), nullable=True),
    sa.Column('db', sa.String(length=200), nullable=True),
    sa.Column('trigger', sa.String(length=20), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('missed', sa.Integer(), nullable=False),
    sa.Column('scheduled_for', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('occurrence_key', name='uq_service_job_runs_occurrence')
    )
    op.create_index('ix_service_job_runs_job', 'service_job_runs', ['job'])
    op.create_table('service_leases',
    sa.Column('job', sa.String(length=100), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('job')
    )
    op.create_table('service_instances',
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=200), nullable=False),
    sa.Column('db', sa.String(length=200), nullable=False),
    sa.Column('time_scale', sa.Float(), nullable=False),
    sa.Column('lease_seconds', sa.Float(), nullable=False),
    sa.Column('jobs', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('holder')
    )
    op.create_table('service_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job', sa.String(length=100), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('requested_by', sa.String(length=200), nullable=False),
    sa.Column('taken_by', sa.String(length=200), nullable=True),
    sa.Column('taken_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('service_requests')
    op.drop_table('service_instances')
    op.drop_table('service_leases')
    op.drop_index('ix_service_job_runs_job', 'service_job_runs')
    op.drop_table('service_job_runs')
