"""Webhook events read from the audit log: where the reader starts.

Until this revision an audited change wrote its webhook events into the outbox itself; from
now on a worker reads them from the committed audit rows
(``authkeep.services.webhooks.source``), behind a cursor kept in ``maintenance_positions``
(job ``webhook_events``). The cursor starts at the newest row of the log: the events of the
rows before it were queued by the previous version (a fresh database starts at 0).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO maintenance_positions (job, position, updated_at) "
        "SELECT 'webhook_events', "
        "'{\"after\": ' || COALESCE(MAX(id), 0) || ', \"gap_since\": null}', "
        "CURRENT_TIMESTAMP FROM audit_log"
    )


def downgrade() -> None:
    op.execute("DELETE FROM maintenance_positions WHERE job = 'webhook_events'")
