"""web console sessions (issue 15)

Revision ID: 0006_ui_sessions
Revises: 0002
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_ui_sessions'
down_revision = '0005_model_versions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ui_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=40), nullable=False),
    sa.Column('key_id', sa.String(length=40), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['key_id'], ['api_keys.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_ui_sessions_org_id', 'ui_sessions', ['org_id'], unique=False)
    op.create_index('ix_ui_sessions_key_id', 'ui_sessions', ['key_id'], unique=False)
    op.create_index('ix_ui_sessions_expires_at', 'ui_sessions', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_ui_sessions_expires_at', table_name='ui_sessions')
    op.drop_index('ix_ui_sessions_key_id', table_name='ui_sessions')
    op.drop_index('ix_ui_sessions_org_id', table_name='ui_sessions')
    op.drop_table('ui_sessions')
