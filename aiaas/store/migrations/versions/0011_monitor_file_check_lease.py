"""a lease on an upload's background check, so a check left by a stopped server is taken up again

Revision ID: 0011_monitor_file_check_lease
Revises: 0010_versions_more
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0011_monitor_file_check_lease'
down_revision = '0010_versions_more'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('files') as batch:
        batch.add_column(sa.Column('check_owner', sa.String(length=120), nullable=True))
        batch.add_column(sa.Column('check_lease_until', sa.Float(), nullable=True))
    op.create_index(op.f('ix_files_status'), 'files', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_files_status'), table_name='files')
    with op.batch_alter_table('files') as batch:
        batch.drop_column('check_lease_until')
        batch.drop_column('check_owner')
