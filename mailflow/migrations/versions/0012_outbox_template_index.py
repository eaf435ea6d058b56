"""outbox(template, created_at): the per-kind questions asked for every staff
notice and held-back answer ("how many of this kind in the last hour?") read an
index instead of the whole outbox

Revision ID: 0012_outbox_template
Revises: 0011_staff
"""
from alembic import op


revision = '0012_outbox_template'
down_revision = '0011_staff'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_outbox_template_created', 'outbox', ['template', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_outbox_template_created', table_name='outbox')
