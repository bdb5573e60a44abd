"""oplog archive state: when the archiver last had every entry the server had (RPO, S38)

Revision ID: 0005_archive_state
Revises: 0004_oplog_archive
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_archive_state'
down_revision = '0004_oplog_archive'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('oplog_archive_state',
    sa.Column('repo', sa.Text(), nullable=False),
    sa.Column('caught_up_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_t', sa.BigInteger(), nullable=True),
    sa.Column('last_i', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('repo')
    )


def downgrade() -> None:
    op.drop_table('oplog_archive_state')
