"""audit log

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 13:36:06.856801
"""

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('audit_logs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('actor_pat_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('actor_email', sa.String(length=320), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('resource', sa.String(length=200), nullable=False),
    sa.Column('meta', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], name=op.f('fk_audit_logs_org_id_orgs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_logs'))
    )
    with op.batch_alter_table('audit_logs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_logs_org_id_action'), ['org_id', 'action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_logs_org_id_actor_pat_id'), ['org_id', 'actor_pat_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_logs_org_id_created_at'), ['org_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_logs_org_id_id'), ['org_id', 'id'], unique=False)




    # Append-only: the database itself refuses to change or remove an entry.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION audit_logs_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'audit_logs is append-only';
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs "
            "FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_logs_no_{event.lower()} BEFORE {event} ON audit_logs "
                "BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_logs_append_only ON audit_logs")
        op.execute("DROP FUNCTION audit_logs_append_only()")
    else:
        op.execute("DROP TRIGGER audit_logs_no_update")
        op.execute("DROP TRIGGER audit_logs_no_delete")

    with op.batch_alter_table('audit_logs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_logs_org_id_id'))
        batch_op.drop_index(batch_op.f('ix_audit_logs_org_id_created_at'))
        batch_op.drop_index(batch_op.f('ix_audit_logs_org_id_actor_pat_id'))
        batch_op.drop_index(batch_op.f('ix_audit_logs_org_id_action'))

    op.drop_table('audit_logs')

