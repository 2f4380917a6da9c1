"""Checking the audit log's hash chains: the walk behind :func:`audit_admin.verify
<authkeep.services.audit_admin.verify>` and ``authkeep audit verify``.

**What fails.** A row fails when its stored hash differs from the hash of its content (it
was edited), or when its ``prev_hash`` is not the stored hash of the previous row of its
chain (a row before it was deleted, inserted or reordered); the first row of a chain must
name the chain's genesis value or an anchor a retention purge recorded. The walk goes
oldest first and stops at the first row that fails.

**Streaming.** Rows come in pages from :mod:`authkeep.db.audit_scan` (raw tuples, the hash
recomputed from pre-encoded parts), inside one snapshot: memory stays flat however long the
log, and a row committed during the walk is neither half-seen nor reported as a gap.

**In parallel** (PostgreSQL, ``jobs`` > 1, a log of at least :data:`PARALLEL_FROM` rows).
Whether a row fails depends only on the row and on the stored hash of the previous row of
its chain. The id range is cut into ``jobs`` segments, each walked by a process of its own
(``python -m`` of this module) inside the same snapshot (``pg_export_snapshot``), checking
every row's content and every link but those of each chain's first row in the segment;
the parent then joins the segments
in order, checking those links against the heads the earlier segments ended with. The first
segment holding a failure is walked again by the parent, sequentially from those heads, so
that the break, its reason and the counts are exactly what the one-process walk reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from authkeep.db import audit as audit_rows
from authkeep.db import audit_scan
from authkeep.db.base import BIGINT_MAX
from authkeep.db.engine import Database
from authkeep.services.audit_admin import BrokenLink, ChainHead, Verification, snapshot
from authkeep.tls import DatabaseTLS

__all__ = ["PARALLEL_FROM", "Progress", "verify"]

Progress = Callable[[int, int], None]
"""Called as rows are checked with (rows checked, rows expected): the second is an estimate
from the id range, exact unless ids were skipped (a rolled-back append)."""

PARALLEL_FROM = 1_000_000
"""Below this many rows, starting worker processes (each imports authkeep: seconds on a busy
machine) costs more than it saves."""

_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")
_LINK = (
    "prev_hash does not match row {head}, the previous row of this chain: rows between them "
    "were deleted or inserted"
)
_FIRST = (
    "first row of its chain names neither the genesis value nor a purge anchor: earlier rows "
    "were deleted outside the retention purge"
)
_EDITED = "hash does not match the row's content: the row was edited"


@dataclass(slots=True)
class _Walk:
    """The state of a walk: per chain ``[id, hash, rows]`` of its newest row checked.

    ``anchors`` None is a segment's walk: the link of each chain's first row in it is not
    checked but kept in ``firsts`` (id, prev_hash) for the parent."""

    anchors: dict[str, set[str]] | None
    heads: dict[str, list[Any]] = field(default_factory=dict)
    firsts: dict[str, tuple[int, str]] = field(default_factory=dict)
    rows: int = 0
    broken: BrokenLink | None = None

    def check(self, page: Sequence[audit_scan.ScanRow], hash_of: Callable[[Any], str]) -> bool:
        """Check ``page``; False at the first row that fails (``broken`` says why)."""
        heads = self.heads
        anchors = self.anchors
        platform = audit_rows.PLATFORM_CHAIN
        for position, row in enumerate(page, 1):
            chain = row[2] or platform
            head = heads.get(chain)
            broken = None
            if head is not None:
                if row[12] != head[1]:
                    broken = BrokenLink(row[0], chain, _LINK.format(head=head[0]))
            elif anchors is None:
                self.firsts[chain] = (row[0], row[12])
            elif row[12] != audit_rows.genesis_hash(chain) and row[12] not in anchors.get(
                chain, ()
            ):
                broken = BrokenLink(row[0], chain, _FIRST)
            if broken is None and hash_of(row) != row[13]:
                broken = BrokenLink(row[0], chain, _EDITED)
            if broken is not None:
                # Counted up to and with the row that failed.
                self.rows += position
                self.broken = broken
                return False
            if head is None:
                heads[chain] = [row[0], row[13], 1]
            else:
                head[0] = row[0]
                head[1] = row[13]
                head[2] += 1
        self.rows += len(page)
        return True

    def verification(self) -> Verification:
        chains = [
            ChainHead(chain, head[2], head[0], head[1])
            for chain, head in sorted(self.heads.items())
        ]
        return Verification(self.rows, chains, self.broken)


async def _walk(
    conn: Any,
    walk: _Walk,
    *,
    after: int = 0,
    upto: int = BIGINT_MAX,
    progress: Callable[[int], None] | None = None,
) -> None:
    hash_of = audit_scan.row_hasher()
    async with contextlib.aclosing(audit_scan.pages(conn, after=after, upto=upto)) as stream:
        async for page in stream:
            if not walk.check(page, hash_of):
                return
            if progress is not None:
                progress(walk.rows)


async def verify(db: Database, progress: Progress | None = None, *, jobs: int = 1) -> Verification:
    """Walk every chain oldest first; stop at the first row that fails (module docstring).
    ``jobs`` > 1 walks a large log on PostgreSQL in that many processes, with the same
    result. ``progress`` hears about the rows checked as the walk goes."""
    async with snapshot(db) as conn:
        anchors = await audit_rows.purge_anchors(conn)
        bounds = await audit_scan.id_bounds(conn)
        expected = 0 if bounds is None else bounds[1] - bounds[0] + 1
        walk = _Walk(anchors)
        if bounds is None:
            return walk.verification()
        if jobs > 1 and db.is_postgres and expected >= PARALLEL_FROM:
            return await _parallel(db, conn, anchors, bounds, jobs, progress)
        report = None if progress is None else (lambda rows: progress(rows, max(expected, rows)))
        await _walk(conn, walk, progress=report)
    return walk.verification()


@dataclass(frozen=True, slots=True)
class _Segment:
    """What a worker found in ``after < id <= upto``."""

    after: int
    upto: int
    rows: int
    failed: bool
    heads: dict[str, list[Any]]
    firsts: dict[str, tuple[int, str]]


def _segments(low: int, high: int, jobs: int) -> list[tuple[int, int]]:
    size = -(-(high - low + 1) // jobs)  # ceiling
    edges = [low - 1 + size * n for n in range(jobs)] + [high]
    return [(edges[n], min(edges[n + 1], high)) for n in range(jobs) if edges[n] < high]


async def _parallel(
    db: Database,
    conn: Any,
    anchors: dict[str, set[str]],
    bounds: tuple[int, int],
    jobs: int,
    progress: Progress | None,
) -> Verification:
    # The workers import this transaction's snapshot: it stays open until they are done.
    snapshot_id = (await conn.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
    ranges = _segments(*bounds, jobs)
    expected = bounds[1] - bounds[0] + 1
    done = [0] * len(ranges)

    def report(index: int, rows: int) -> None:
        done[index] = rows
        if progress is not None:
            total = sum(done)
            progress(total, max(expected, total))

    segments = await asyncio.gather(
        *(
            _run_worker(db, snapshot_id, after, upto, functools.partial(report, index))
            for index, (after, upto) in enumerate(ranges)
        )
    )
    return await _join(conn, anchors, list(segments))


async def _run_worker(
    db: Database, snapshot_id: str, after: int, upto: int, report: Callable[[int], None]
) -> _Segment:
    """One segment in a child process (``python -m authkeep.services.audit_verify``: no
    multiprocessing, whose spawned children re-run the parent's ``__main__``). The job goes
    through stdin, never the command line, which other users of the host can read."""
    tls = {
        name: None if value is None else str(value)
        for name, value in ((f, getattr(db.tls, f)) for f in _TLS_FIELDS)
    }
    job = {"url": db.url, "tls": tls, "snapshot": snapshot_id, "after": after, "upto": upto}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # The result is one line naming every chain's head: tens of thousands of
        # organizations make it megabytes, past the 64 KiB default.
        limit=_RESULT_LIMIT,
    )
    if proc.stdin is None or proc.stdout is None or proc.stderr is None:  # pragma: no cover
        raise RuntimeError("the worker's pipes did not open")
    proc.stdin.write(json.dumps(job).encode())
    await proc.stdin.drain()
    proc.stdin.close()
    errors = asyncio.ensure_future(proc.stderr.read())
    result: dict[str, Any] | None = None
    try:
        async for line in proc.stdout:
            kind, _, value = line.decode().partition(" ")
            if kind == "progress":
                report(int(value))
            elif kind == "result":
                result = json.loads(value)
    except BaseException:
        # Only when the parent gives up: killing a child that already exited would reap it
        # behind asyncio's back (Popen.send_signal polls first) and lose its exit status.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    finally:
        await proc.wait()
        stderr = (await errors).decode(errors="replace")
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"audit verify worker failed ({proc.returncode}): {stderr[-2000:]}")
    return _Segment(
        after,
        upto,
        int(result["rows"]),
        bool(result["failed"]),
        {chain: list(head) for chain, head in result["heads"].items()},
        {chain: (int(first[0]), str(first[1])) for chain, first in result["firsts"].items()},
    )


async def _join(conn: Any, anchors: dict[str, set[str]], segments: list[_Segment]) -> Verification:
    walk = _Walk(anchors)
    for segment in segments:
        linked = all(
            _links(walk.heads.get(chain), chain, prev, anchors)
            for chain, (_, prev) in segment.firsts.items()
        )
        if segment.failed or not linked:
            # The first failure is in here: walk it again, exactly as one process would.
            await _walk(conn, walk, after=segment.after, upto=segment.upto)
            return walk.verification()
        walk.rows += segment.rows
        for chain, (head_id, head_hash, rows) in segment.heads.items():
            earlier = walk.heads.get(chain)
            walk.heads[chain] = [head_id, head_hash, rows + (earlier[2] if earlier else 0)]
    return walk.verification()


def _links(
    head: list[Any] | None, chain: str, prev_hash: str, anchors: dict[str, set[str]]
) -> bool:
    if head is not None:
        return bool(prev_hash == head[1])
    return prev_hash == audit_rows.genesis_hash(chain) or prev_hash in anchors.get(chain, ())


_TLS_FIELDS = ("mode", "ca_file", "mode_setting", "ca_setting", "url_setting")
_RESULT_LIMIT = 1 << 28


async def _segment(job: dict[str, Any]) -> None:
    """A worker: walk one segment inside the parent's snapshot; progress and the result as
    lines on stdout."""
    snapshot_id = str(job["snapshot"])
    if not _SNAPSHOT_ID.fullmatch(snapshot_id):  # spliced into SQL below
        raise ValueError(f"unexpected snapshot id {snapshot_id!r}")
    tls = dict(job["tls"])
    if tls.get("ca_file") is not None:
        tls["ca_file"] = Path(tls["ca_file"])
    db = Database(str(job["url"]), tls=DatabaseTLS(**tls), pool_size=1)
    walk = _Walk(None)
    try:
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                # First in the transaction: the parent's snapshot, then read-only.
                await conn.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'"))
                await conn.execute(text("SET TRANSACTION READ ONLY"))
                await _walk(
                    conn,
                    walk,
                    after=int(job["after"]),
                    upto=int(job["upto"]),
                    progress=lambda rows: print(f"progress {rows}", flush=True),
                )
    finally:
        await db.close()
    result = {
        "rows": walk.rows,
        "failed": walk.broken is not None,
        "heads": walk.heads,
        "firsts": walk.firsts,
    }
    print("result " + json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(_segment(json.loads(sys.stdin.read())))
