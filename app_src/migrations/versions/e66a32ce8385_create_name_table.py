"""create name table: the names the form stores

Revision ID: e66a32ce8385
Revises:
Create Date: 2026-11-25 01:02:00.863423

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e66a32ce8385'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('name',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )


def downgrade():
    op.drop_table('name')
