"""containment that is enforced (issue 10, deliverable 3): what each incident contains

Revision ID: 0008_containment
Revises: 0006_incident_hardening, 0007_recovery_plans
"""
from alembic import op
import sqlalchemy as sa


revision = '0008_containment'
# it alters the incidents table (0006's branch) and comes after the recovery plans (0007)
down_revision = ('0006_incident_hardening', '0007_recovery_plans')
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incidents') as b:
        b.add_column(sa.Column('containment', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('incidents') as b:
        b.drop_column('containment')
