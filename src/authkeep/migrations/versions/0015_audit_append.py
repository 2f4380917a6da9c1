"""Audit append in constant time: the chain head found in one index step (PostgreSQL).

``authkeep_audit_append`` read a chain's head with ``WHERE org_id = $1 ORDER BY id DESC
LIMIT 1`` (``IS NULL`` for the platform chain). The planner answered that with the primary
key's backward scan, filtering ``org_id`` row by row, or with a bitmap scan of the whole
chain and a sort: work that grew with the table, under the chain's lock, on every audited
change (bench: +1 ms per 4,000 rows). The new query leaves the ``(org_id, id)`` index as the
only plan without a sort (see ``authkeep.db.audit``, above ``postgres_append_function``).
No schema change: the function is replaced; downgrade puts the previous one back.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authkeep.db import audit as audit_rows
from authkeep.db.audit_guard import quote_ident

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# The function as revision 0004 created it, for downgrade (frozen here: the live code has
# moved on). @S@ stands for the quoted schema.
_PREVIOUS = """
CREATE OR REPLACE FUNCTION @S@.authkeep_audit_append(
    p_lock bigint, p_chain text, p_genesis text, p_digest text, p_at timestamptz,
    p_org_id uuid, p_actor_user_id uuid, p_actor_api_key_id uuid, p_request_id text,
    p_ip text, p_action text, p_entity_type text, p_entity_id text, p_outcome text,
    p_details jsonb)
RETURNS TABLE (id bigint, at timestamptz, prev_hash text, hash text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $append$
DECLARE
    v_prev text;
    v_head_at timestamptz;
    v_at timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    -- Read after the lock: a statement of a volatile function sees what committed before it.
    IF p_org_id IS NULL THEN
        SELECT a.hash, a.at INTO v_prev, v_head_at FROM @S@.audit_log AS a
        WHERE a.org_id IS NULL ORDER BY a.id DESC LIMIT 1;
    ELSE
        SELECT a.hash, a.at INTO v_prev, v_head_at FROM @S@.audit_log AS a
        WHERE a.org_id = p_org_id ORDER BY a.id DESC LIMIT 1;
    END IF;
    IF v_prev IS NULL THEN
        -- A chain whose rows were all purged goes on from its last purged row.
        SELECT a.details -> 'anchors' ->> p_chain INTO v_prev FROM @S@.audit_log AS a
        WHERE a.action = 'audit.purged' AND coalesce(a.details -> 'anchors' ->> p_chain, '') <> ''
        ORDER BY a.id DESC LIMIT 1;
        v_prev := coalesce(v_prev, p_genesis);
    END IF;
    -- Never backwards along a chain, whatever the clocks of the app's hosts say.
    v_at := coalesce(p_at, greatest(clock_timestamp(), v_head_at));
    RETURN QUERY
    INSERT INTO @S@.audit_log AS a (at, org_id, actor_user_id, actor_api_key_id, request_id, ip,
                              action, entity_type, entity_id, outcome, details, prev_hash,
                              hash)
    VALUES (v_at, p_org_id, p_actor_user_id, p_actor_api_key_id, p_request_id, p_ip,
            p_action, p_entity_type, p_entity_id, p_outcome, p_details, v_prev,
            encode(sha256(convert_to(p_digest || '|' || to_char(v_at AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS.US') || '|' || v_prev, 'UTF8')), 'hex'))
    RETURNING a.id, a.at, a.prev_hash::text, a.hash::text;
END
$append$
"""


def _schema() -> str:
    return str(op.get_bind().execute(sa.text("SELECT current_schema()")).scalar_one())


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(audit_rows.postgres_append_function(_schema()))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PREVIOUS.replace("@S@", quote_ident(_schema())))
