"""oauth: oauth_identities (linked provider accounts), oauth_used_states (spent flow states)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 10:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_identities",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_oauth_identities_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_identities")),
        sa.UniqueConstraint("provider", "subject", name=op.f("uq_oauth_identities_provider_subject")),
        sa.UniqueConstraint("user_id", "provider", name=op.f("uq_oauth_identities_user_id_provider")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "oauth_used_states",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_oauth_used_states")),
    )
    with op.batch_alter_table("oauth_used_states", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oauth_used_states_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oauth_used_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_used_states_expires_at"))
    op.drop_table("oauth_used_states")
    op.drop_table("oauth_identities")
