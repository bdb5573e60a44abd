"""backups: catalog, verifications, restore runs, promotions

Revision ID: 0002_backups
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_backups'
down_revision = '0001'
branch_labels = ('backups',)
depends_on = None


def upgrade() -> None:
    op.create_table('backups',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('db', sa.String(length=200), nullable=False),
    sa.Column('repo', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('collections', sa.JSON(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('file_count', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('oplog_start_t', sa.BigInteger(), nullable=True),
    sa.Column('oplog_start_i', sa.BigInteger(), nullable=True),
    sa.Column('oplog_end_t', sa.BigInteger(), nullable=True),
    sa.Column('oplog_end_i', sa.BigInteger(), nullable=True),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=True),
    sa.Column('pinned_by', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_backups_db_kind_status', 'backups', ['db', 'kind', 'status'])
    op.create_table('verifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('backup_id', sa.String(length=64), nullable=False),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('verdict', sa.String(length=20), nullable=False),
    sa.Column('restore_seconds', sa.JSON(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['backup_id'], ['backups.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('restore_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('backup_id', sa.String(length=64), nullable=False),
    sa.Column('target_db', sa.String(length=200), nullable=False),
    sa.Column('collections', sa.JSON(), nullable=False),
    sa.Column('filter', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('progress', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('promotions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('from_db', sa.String(length=200), nullable=False),
    sa.Column('live_db', sa.String(length=200), nullable=False),
    sa.Column('collections', sa.JSON(), nullable=False),
    sa.Column('authorized_by', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('undo_dir', sa.Text(), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('undone_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('promotions')
    op.drop_table('restore_runs')
    op.drop_table('verifications')
    op.drop_index('ix_backups_db_kind_status', table_name='backups')
    op.drop_table('backups')
