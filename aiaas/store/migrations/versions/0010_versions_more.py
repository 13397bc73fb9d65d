"""checkpoints kept as model artifacts; max_replicas on deployments (issue 14)

Revision ID: 0009_versions_more
Revises: 0008_batches
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_versions_more'
down_revision = '0009_request_logs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_checkpoints') as batch:
        batch.add_column(sa.Column('artifact_uri', sa.Text(), nullable=True))
    with op.batch_alter_table('deployments') as batch:
        batch.add_column(sa.Column('max_replicas', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deployments') as batch:
        batch.drop_column('max_replicas')
    with op.batch_alter_table('job_checkpoints') as batch:
        batch.drop_column('artifact_uri')
