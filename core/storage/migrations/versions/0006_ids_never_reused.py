"""ids never reused: SQLite tables rebuilt with AUTOINCREMENT

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 09:00:00.000000

Without AUTOINCREMENT SQLite hands out max(rowid) + 1, so the id of the
newest row, once deleted, went to the next row, even in another
organisation. With it, ids only grow (sqlite_sequence keeps the highest ever
given). SQLite cannot add AUTOINCREMENT to a table, so each table is rebuilt
(copied into a new one, which takes the old name). Ids deleted before this
migration at the top of a table may still be given out once more; none after.

PostgreSQL sequences never go back: nothing to do there.

core.storage.migrate runs this with foreign keys off (dropping the old table
would otherwise cascade deletes into its children) and checks them before
committing.
"""

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# Every table whose integer primary key the database generates.
TABLES = (
    "orgs",
    "users",
    "memberships",
    "api_tokens",
    "password_resets",
    "idempotency_keys",
    "audit_logs",
    "invites",
    "monitors",
    "check_results",
    "monitor_events",
)


def _rebuild(autoincrement: bool) -> None:
    for name in TABLES:
        with op.batch_alter_table(
            name, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass
    # Triggers go with the table they are on: the audit log's (0003) come back.
    for event in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER audit_logs_no_{event.lower()} BEFORE {event} ON audit_logs "
            "BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only'); END"
        )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(autoincrement=False)
