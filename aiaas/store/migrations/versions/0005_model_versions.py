"""registered models, model versions, aliases and deployment revisions

Revision ID: 0005_model_versions
Revises: 0003_idempotency_keys
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_model_versions'
down_revision = '0004_job_attempts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('registered_models',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('org_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('latest_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_registered_models_org_id', 'registered_models', ['org_id'], unique=False)
    op.create_index('ux_registered_models_org_name', 'registered_models', ['org_id', 'name'], unique=True)
    op.create_table('model_versions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('org_id', sa.String(length=40), nullable=False),
    sa.Column('registered_model_id', sa.String(length=40), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.String(length=300), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=True),
    sa.Column('parent_version', sa.Integer(), nullable=True),
    sa.Column('lineage', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['registered_model_id'], ['registered_models.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_model_versions_org_id', 'model_versions', ['org_id'], unique=False)
    op.create_index('ux_model_versions_rm_version', 'model_versions', ['registered_model_id', 'version'], unique=True)
    op.create_index('ux_model_versions_org_model', 'model_versions', ['org_id', 'model_id'], unique=True)
    op.create_table('model_aliases',
    sa.Column('registered_model_id', sa.String(length=40), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=40), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['registered_model_id'], ['registered_models.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('registered_model_id', 'alias')
    )
    op.create_index('ix_model_aliases_org_id', 'model_aliases', ['org_id'], unique=False)
    op.create_table('deployment_revisions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('org_id', sa.String(length=40), nullable=False),
    sa.Column('deployment_id', sa.String(length=40), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('actor_key_id', sa.String(length=40), nullable=True),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_deployment_revisions_org_id', 'deployment_revisions', ['org_id'], unique=False)
    op.create_index('ux_deployment_revisions_dep_rev', 'deployment_revisions', ['deployment_id', 'revision'],
                    unique=True)


def downgrade() -> None:
    op.drop_table('deployment_revisions')
    op.drop_table('model_aliases')
    op.drop_table('model_versions')
    op.drop_table('registered_models')
