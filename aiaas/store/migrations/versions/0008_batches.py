"""batches (issue 16)

Revision ID: 0008_batches
Revises: 0006_ui_sessions
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0008_batches'
down_revision = '0007_monitoring_webhooks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('org_id', sa.String(length=40), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=True),
    sa.Column('endpoint', sa.String(length=300), nullable=False),
    sa.Column('input_file_id', sa.String(length=40), nullable=False),
    sa.Column('completion_window', sa.String(length=10), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('batch_metadata', sa.JSON(), nullable=True),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('cursor', sa.Integer(), nullable=False),
    sa.Column('parts', sa.JSON(), nullable=False),
    sa.Column('output_file_id', sa.String(length=40), nullable=True),
    sa.Column('error_file_id', sa.String(length=40), nullable=True),
    sa.Column('errors', sa.JSON(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', sa.Float(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('in_progress_at', sa.BigInteger(), nullable=True),
    sa.Column('finalizing_at', sa.BigInteger(), nullable=True),
    sa.Column('completed_at', sa.BigInteger(), nullable=True),
    sa.Column('failed_at', sa.BigInteger(), nullable=True),
    sa.Column('expired_at', sa.BigInteger(), nullable=True),
    sa.Column('cancelling_at', sa.BigInteger(), nullable=True),
    sa.Column('cancelled_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_batches_org_id', 'batches', ['org_id'], unique=False)
    op.create_index('ix_batches_status', 'batches', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_batches_status', table_name='batches')
    op.drop_index('ix_batches_org_id', table_name='batches')
    op.drop_table('batches')
