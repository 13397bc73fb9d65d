"""files and fine-tuning jobs listed by organisation, newest first, from an index

A page of an organisation's files (GET /v1/files, the console's files page and job form) was read through
the org_id index and sorted: every one of the organisation's rows fetched to find the newest 20 (80 ms
with 10,000 files on SQLite, against 1.5 ms through (org_id, id)). Jobs the same.

Revision ID: 0012_org_id_id_indexes
Revises: 0011_monitor_file_check_lease
Create Date: 2026-12-07
"""
from alembic import op


revision = '0012_org_id_id_indexes'
down_revision = '0011_monitor_file_check_lease'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_files_org_id_id', 'files', ['org_id', 'id'], unique=False)
    op.create_index('ix_fine_tuning_jobs_org_id_id', 'fine_tuning_jobs', ['org_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_fine_tuning_jobs_org_id_id', table_name='fine_tuning_jobs')
    op.drop_index('ix_files_org_id_id', table_name='files')
