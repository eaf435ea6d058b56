"""staff desk: request owner and Cc addresses, outbox Cc, internal notes

Revision ID: 0011_staff
Revises: 0010_inbound
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
import mailflow.models


revision = '0011_staff'
down_revision = '0010_inbound'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('request') as batch:
        batch.add_column(sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=100),
                                   nullable=True))
        batch.add_column(sa.Column('cc_addrs', sqlmodel.sql.sqltypes.AutoString(length=2000),
                                   nullable=True))
        batch.create_index('ix_request_owner', ['owner'], unique=False)
    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('cc_addrs', sqlmodel.sql.sqltypes.AutoString(length=2000),
                                   nullable=True))
    op.create_table('request_note',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('author', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('text', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('at', mailflow.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['request.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_request_note_request_id', 'request_note', ['request_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_request_note_request_id', table_name='request_note')
    op.drop_table('request_note')
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('cc_addrs')
    with op.batch_alter_table('request') as batch:
        batch.drop_index('ix_request_owner')
        batch.drop_column('cc_addrs')
        batch.drop_column('owner')
