"""monitor_tags: the tag filter's index covers monitor_id

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 21:40:00.000000

ListMonitors' tag filter reads (org_id, tag IN …) grouped by monitor_id; with
monitor_id in the index both databases answer it from the index alone.
"""

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('monitor_tags', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_monitor_tags_org_id_tag_monitor_id'), ['org_id', 'tag', 'monitor_id'], unique=False
        )
        batch_op.drop_index(batch_op.f('ix_monitor_tags_org_id_tag'))


def downgrade() -> None:
    with op.batch_alter_table('monitor_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_monitor_tags_org_id_tag'), ['org_id', 'tag'], unique=False)
        batch_op.drop_index(batch_op.f('ix_monitor_tags_org_id_tag_monitor_id'))
