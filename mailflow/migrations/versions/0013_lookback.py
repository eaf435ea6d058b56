"""The loop guard's look back reads indexes, not rows: inbound.text_digest (the
digest of each stored text, compared instead of the texts), inbound(from_addr,
received_at) in place of inbound(from_addr), and outbox(to_addrs, sent_at) for
"our last mail to this address".  A backlog from one sender made these reads
grow with every message before (drain 57.8 -> 27.4 msg/s in issue 13's run).

Revision ID: 0013_lookback
Revises: 0012_outbox_template
"""
from alembic import op
import sqlalchemy as sa


revision = '0013_lookback'
down_revision = '0012_outbox_template'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inbound') as batch:
        batch.add_column(sa.Column('text_digest', sa.String(length=64), nullable=True))
        batch.drop_index('ix_inbound_from_addr')
        batch.create_index('ix_inbound_from_received', ['from_addr', 'received_at'])
    op.create_index('ix_outbox_to_sent', 'outbox', ['to_addrs', 'sent_at'])


def downgrade() -> None:
    op.drop_index('ix_outbox_to_sent', table_name='outbox')
    with op.batch_alter_table('inbound') as batch:
        batch.drop_index('ix_inbound_from_received')
        batch.create_index('ix_inbound_from_addr', ['from_addr'])
        batch.drop_column('text_digest')
