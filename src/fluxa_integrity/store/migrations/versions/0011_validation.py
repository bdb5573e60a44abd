"""validation: where each continuous-validation watcher stopped (issue 11, S1)

Revision ID: 0011_validation
Revises: 0010_monitors
"""
from alembic import op
import sqlalchemy as sa


revision = '0011_validation'
down_revision = '0010_monitors'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('validation_positions',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('db', sa.String(length=200), nullable=False),
    sa.Column('ts_t', sa.BigInteger(), nullable=True),
    sa.Column('ts_i', sa.BigInteger(), nullable=True),
    sa.Column('resume_token', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stats', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('validation_positions')
