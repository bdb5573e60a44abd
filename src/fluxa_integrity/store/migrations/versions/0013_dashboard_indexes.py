"""dashboard indexes: open findings counted by data class from the index alone (issue 12)

The console's dashboard counts the open findings by data class on every load (one GROUP BY,
incidents/board.py); with (status, data_class) the count reads the index, not the table's rows
(samples and messages included). The live incidents are read most urgent first, in the order of
their opening: (status, opened_at).

Revision ID: 0013_dashboard_indexes
Revises: 0012_api_tokens
"""
from alembic import op


revision = '0013_dashboard_indexes'
down_revision = '0012_api_tokens'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_findings_status_data_class', 'findings', ['status', 'data_class'])
    op.create_index('ix_incidents_status_opened_at', 'incidents', ['status', 'opened_at'])


def downgrade() -> None:
    op.drop_index('ix_incidents_status_opened_at', table_name='incidents')
    op.drop_index('ix_findings_status_data_class', table_name='findings')
