"""inbound.digest: a digest of each message's content, so that a different
message reusing a known Message-ID is told from the same message again

Revision ID: 0010_inbound
Revises: 0008_mails
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_inbound'
down_revision = '0008_mails'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inbound') as batch:
        batch.add_column(sa.Column('digest', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('inbound') as batch:
        batch.drop_column('digest')
