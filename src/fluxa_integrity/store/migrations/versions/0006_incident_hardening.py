"""incident hardening: drills, duplicates and field-level scope (issue 9, items 18, 20, 21)

Revision ID: 0006_incident_hardening
Revises: 0003_incidents
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_incident_hardening'
down_revision = '0003_incidents'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incidents') as b:
        b.add_column(sa.Column('drill', sa.Boolean(), nullable=False, server_default=sa.false()))
        b.add_column(sa.Column('duplicate_of', sa.Integer(), nullable=True))
        b.add_column(sa.Column('places', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('incidents') as b:
        b.drop_column('places')
        b.drop_column('duplicate_of')
        b.drop_column('drill')
