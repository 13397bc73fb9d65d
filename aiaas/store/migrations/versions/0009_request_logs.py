"""request logs (issue 16): sampled request/response logging per deployment

Revision ID: 0009_request_logs
Revises: 0008_batches
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0009_request_logs'
down_revision = '0008_batches'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deployments') as batch:
        batch.add_column(sa.Column('request_log_sample_rate', sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('request_log_retention_days', sa.Integer(), nullable=False,
                                   server_default='30'))
    op.create_table('request_log_chunks',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('org_id', sa.String(length=40), nullable=False),
    sa.Column('deployment_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('records', sa.Integer(), nullable=False),
    sa.Column('storage_uri', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_request_log_chunks_org_id'), 'request_log_chunks', ['org_id'], unique=False)
    op.create_index(op.f('ix_request_log_chunks_deployment_id'), 'request_log_chunks', ['deployment_id'],
                    unique=False)
    op.create_index(op.f('ix_request_log_chunks_created_at'), 'request_log_chunks', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_table('request_log_chunks')
    with op.batch_alter_table('deployments') as batch:
        batch.drop_column('request_log_retention_days')
        batch.drop_column('request_log_sample_rate')
