"""incidents: incidents, linked findings, checklists, hash-chained timeline, publications, outbox

Revision ID: 0003_incidents
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_incidents'
down_revision = '0001'
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('incidents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=40), nullable=False),
    sa.Column('source_kind', sa.String(length=60), nullable=True),
    sa.Column('database', sa.String(length=200), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('severity', sa.String(length=20), nullable=False),
    sa.Column('severity_manual', sa.Boolean(), nullable=False),
    sa.Column('data_classes', sa.JSON(), nullable=False),
    sa.Column('collections', sa.JSON(), nullable=False),
    sa.Column('backup_ids', sa.JSON(), nullable=False),
    sa.Column('restore_ids', sa.JSON(), nullable=False),
    sa.Column('roles', sa.JSON(), nullable=False),
    sa.Column('escalated_to', sa.JSON(), nullable=False),
    sa.Column('fired', sa.JSON(), nullable=False),
    sa.Column('scope', sa.JSON(), nullable=False),
    sa.Column('read_only', sa.Boolean(), nullable=False),
    sa.Column('paused_features', sa.JSON(), nullable=False),
    sa.Column('issue_started_at', TZ, nullable=True),
    sa.Column('detected_at', TZ, nullable=True),
    sa.Column('recovery_point', TZ, nullable=True),
    sa.Column('opened_at', TZ, nullable=False),
    sa.Column('acknowledged_at', TZ, nullable=True),
    sa.Column('investigating_at', TZ, nullable=True),
    sa.Column('recovering_at', TZ, nullable=True),
    sa.Column('resolved_at', TZ, nullable=True),
    sa.Column('closed_at', TZ, nullable=True),
    sa.Column('resolution', sa.Text(), nullable=True),
    sa.Column('root_cause', sa.Text(), nullable=True),
    sa.Column('contributing_factors', sa.JSON(), nullable=False),
    sa.Column('lessons', sa.JSON(), nullable=False),
    sa.Column('action_items', sa.JSON(), nullable=False),
    sa.Column('timeline_head', sa.String(length=64), nullable=False),
    sa.Column('timeline_count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_incidents_status', 'incidents', ['status'])
    op.create_table('incident_findings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('linked_at', TZ, nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], ),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('incident_id', 'finding_id', name='uq_incident_findings')
    )
    op.create_table('incident_checklist',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('phase_id', sa.String(length=100), nullable=False),
    sa.Column('item_id', sa.String(length=100), nullable=False),
    sa.Column('owner', sa.String(length=100), nullable=False),
    sa.Column('done_at', TZ, nullable=True),
    sa.Column('done_by', sa.String(length=200), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('incident_id', 'item_id', name='uq_incident_checklist')
    )
    op.create_table('incident_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('at', TZ, nullable=False),
    sa.Column('kind', sa.String(length=60), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('incident_id', 'seq', name='uq_incident_events_seq')
    )
    op.create_table('incident_publications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('template', sa.String(length=40), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('values', sa.JSON(), nullable=False),
    sa.Column('published_at', TZ, nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('incident_notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=60), nullable=False),
    sa.Column('subject', sa.String(length=400), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', TZ, nullable=False),
    sa.Column('next_attempt_at', TZ, nullable=True),
    sa.Column('sent_at', TZ, nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_incident_notifications_status', 'incident_notifications', ['status'])


def downgrade() -> None:
    op.drop_index('ix_incident_notifications_status', 'incident_notifications')
    op.drop_table('incident_notifications')
    op.drop_table('incident_publications')
    op.drop_table('incident_events')
    op.drop_table('incident_checklist')
    op.drop_table('incident_findings')
    op.drop_index('ix_incidents_status', 'incidents')
    op.drop_table('incidents')
