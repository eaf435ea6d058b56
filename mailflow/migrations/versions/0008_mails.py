"""client_mail_state: the period of each client's last digest, and the low-balance notice

Revision ID: 0008_mails
Revises: 0003_billing
"""
from alembic import op
import sqlalchemy as sa
import mailflow.models


revision = '0008_mails'
down_revision = '0003_billing'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('client_mail_state',
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('digest_through', mailflow.models.UTCDateTime(), nullable=True),
    sa.Column('low_balance_at', mailflow.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['client.id'], ),
    sa.PrimaryKeyConstraint('client_id')
    )


def downgrade() -> None:
    op.drop_table('client_mail_state')
