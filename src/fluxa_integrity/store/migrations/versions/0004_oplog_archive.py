"""oplog archive: slices, gaps; restore_runs.pitr for point-in-time restores

Revision ID: 0004_oplog_archive
Revises: 0002_backups
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_oplog_archive'
down_revision = '0002_backups'
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('oplog_slices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo', sa.Text(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('first_t', sa.BigInteger(), nullable=False),
    sa.Column('first_i', sa.BigInteger(), nullable=False),
    sa.Column('last_t', sa.BigInteger(), nullable=False),
    sa.Column('last_i', sa.BigInteger(), nullable=False),
    sa.Column('prev_t', sa.BigInteger(), nullable=True),
    sa.Column('prev_i', sa.BigInteger(), nullable=True),
    sa.Column('first_wall', TZ, nullable=True),
    sa.Column('last_wall', TZ, nullable=True),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('raw_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', TZ, nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_oplog_slices_last', 'oplog_slices', ['last_t', 'last_i'])
    op.create_table('oplog_gaps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo', sa.Text(), nullable=False),
    sa.Column('after_t', sa.BigInteger(), nullable=True),
    sa.Column('after_i', sa.BigInteger(), nullable=True),
    sa.Column('before_t', sa.BigInteger(), nullable=True),
    sa.Column('before_i', sa.BigInteger(), nullable=True),
    sa.Column('detected_at', TZ, nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('restore_runs') as batch:
        batch.add_column(sa.Column('pitr', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('restore_runs') as batch:
        batch.drop_column('pitr')
    op.drop_table('oplog_gaps')
    op.drop_index('ix_oplog_slices_last', table_name='oplog_slices')
    op.drop_table('oplog_slices')
