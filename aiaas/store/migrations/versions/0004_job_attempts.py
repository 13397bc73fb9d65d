"""fine-tuning jobs count the attempts whose worker died, and keep what is known of the last one

Revision ID: 0004_job_attempts
Revises: 0002
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_job_attempts'
down_revision = '0003_idempotency_keys'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('fine_tuning_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('crashes', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('last_crash', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('fine_tuning_jobs', schema=None) as batch_op:
        batch_op.drop_column('last_crash')
        batch_op.drop_column('crashes')
