"""billing: invoices, their yearly sequence, outbox attachments

Revision ID: 0003_billing
Revises: 0001
Create Date: 2026-11-26 12:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
import mailflow.models


revision = '0003_billing'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('invoice_sequence',
    sa.Column('year', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('last', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('year')
    )
    op.create_table('outbox_attachment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('outbox_id', sa.Integer(), nullable=False),
    sa.Column('filename', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('content_type', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['outbox_id'], ['outbox.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('outbox_attachment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_attachment_outbox_id'), ['outbox_id'], unique=False)

    op.create_table('invoice',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('requester', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    sa.Column('credits', sa.Integer(), nullable=False),
    sa.Column('unit_price_yen', sa.Integer(), nullable=False),
    sa.Column('tax_rate', mailflow.models.DecimalText(), nullable=False),
    sa.Column('price_includes_tax', sa.Boolean(), nullable=False),
    sa.Column('subtotal_yen', sa.Integer(), nullable=False),
    sa.Column('tax_yen', sa.Integer(), nullable=False),
    sa.Column('total_yen', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('issued_at', mailflow.models.UTCDateTime(), nullable=False),
    sa.Column('due', sa.Date(), nullable=False),
    sa.Column('paid_at', mailflow.models.UTCDateTime(), nullable=True),
    sa.Column('lot_id', sa.Integer(), nullable=True),
    sa.Column('void_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('void_by', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    sa.Column('voided_at', mailflow.models.UTCDateTime(), nullable=True),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('source_message_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('pdf', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['client.id'], ),
    sa.ForeignKeyConstraint(['lot_id'], ['lot.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('number'),
    sa.UniqueConstraint('source_message_id'),
    sa.UniqueConstraint('year', 'seq', name='uq_invoice_year_seq')
    )
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.create_index('ix_invoice_client_status', ['client_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_invoice_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_invoice_issued_at'), ['issued_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_invoice_paid_at'), ['paid_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_invoice_paid_at'))
        batch_op.drop_index(batch_op.f('ix_invoice_issued_at'))
        batch_op.drop_index(batch_op.f('ix_invoice_status'))
        batch_op.drop_index('ix_invoice_client_status')
    op.drop_table('invoice')
    with op.batch_alter_table('outbox_attachment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_attachment_outbox_id'))
    op.drop_table('outbox_attachment')
    op.drop_table('invoice_sequence')
