"""Signed checkpoints of the audit chains: what stops a database owner rewriting history.

The hash chain proves that nothing *before* a chain's head changed; it cannot prove that the
head is the real one. Whoever owns the database can cut a chain's tail, delete an
organization's whole chain, or edit a row and recompute every later hash — and
``authkeep audit verify`` would still say OK. A checkpoint closes that: a statement "chain
*C* had its head at row *N*, with hash *H* and time *T*, and *R* rows", signed with an
Ed25519 key the database never sees, and written where the database cannot reach (files in
``AUTHKEEP_AUDIT_CHECKPOINT_DIR``, and the log stream). ``audit verify --checkpoints DIR``
then requires, for every checkpoint, that row *N* still be in chain *C* with hash *H*.

* :func:`take` — verify each chain that moved since the previous checkpoint (only the new
  rows when the previous head is known), and sign the heads of the intact ones. A broken
  chain is never signed: a checkpoint must not bless a rewrite.
* :class:`CheckpointWriter` — appends the lines to one file per UTC day and to the log.
* :func:`read_directory` and :func:`check` — what ``audit verify --checkpoints`` runs.
* :class:`CheckpointScheduler` — the periodic task of ``authkeep serve``.

**Retention.** The purge legitimately deletes the oldest rows, checkpointed heads included.
A checkpointed row may therefore be missing only when its time is older than the retention
(the verifier's ``AUTHKEEP_AUDIT_RETENTION_DAYS``, counted from now), a purge recorded an
anchor for its chain, and no older row of its chain survives (purges remove a prefix).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from authkeep.db import audit as audit_rows
from authkeep.db.audit import AuditFilter, HeadRow
from authkeep.db.base import utcnow
from authkeep.db.engine import Database
from authkeep.db.models import AuditEntry
from authkeep.security.audit_signing import (
    CheckpointSigner,
    VerifyingKey,
    load_or_create_dev_key,
)
from authkeep.services.audit_admin import BrokenLink, snapshot
from authkeep.settings import Settings

log = structlog.get_logger("authkeep.audit")

FORMAT_VERSION = 1
FILE_PREFIX = "checkpoints-"
FILE_SUFFIX = ".jsonl"
_FIELDS = frozenset({"v", "chain", "head_id", "head_hash", "head_at", "rows", "at", "kid", "sig"})


class CheckpointFormatError(ValueError):
    """A line is not a checkpoint."""


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed chain head."""

    chain: str
    head_id: int
    head_hash: str
    head_at: datetime
    rows: int
    at: datetime
    kid: str
    signature: str

    @staticmethod
    def payload_of(head: HeadRow, at: datetime, kid: str) -> dict[str, Any]:
        """What is signed for ``head``."""
        return {
            "v": FORMAT_VERSION,
            "chain": head.chain,
            "head_id": head.head_id,
            "head_hash": head.head_hash,
            "head_at": _time(head.head_at),
            "rows": head.rows,
            "at": _time(at),
            "kid": kid,
        }

    @classmethod
    def sign(cls, head: HeadRow, signer: CheckpointSigner, at: datetime) -> Checkpoint:
        """A checkpoint of ``head`` signed now."""
        payload = cls.payload_of(head, at, signer.kid)
        return cls(
            head.chain,
            head.head_id,
            head.head_hash,
            datetime.fromisoformat(payload["head_at"]),
            head.rows,
            datetime.fromisoformat(payload["at"]),
            signer.kid,
            signer.sign(payload),
        )

    def payload(self) -> dict[str, Any]:
        """The signed fields, as they were signed."""
        return {
            "v": FORMAT_VERSION,
            "chain": self.chain,
            "head_id": self.head_id,
            "head_hash": self.head_hash,
            "head_at": _time(self.head_at),
            "rows": self.rows,
            "at": _time(self.at),
            "kid": self.kid,
        }

    def line(self) -> str:
        """The checkpoint as one JSON line (without the newline)."""
        return json.dumps(
            {**self.payload(), "sig": self.signature}, sort_keys=True, separators=(",", ":")
        )

    @classmethod
    def parse(cls, line: str) -> Checkpoint:
        """A checkpoint from its JSON line; CheckpointFormatError when it is not one."""
        try:
            data = json.loads(line)
        except ValueError:
            raise CheckpointFormatError("not JSON") from None
        if not isinstance(data, dict) or set(data) != _FIELDS or data["v"] != FORMAT_VERSION:
            raise CheckpointFormatError("not a version-1 checkpoint")
        try:
            checkpoint = cls(
                _typed(data, "chain", str),
                _typed(data, "head_id", int),
                _typed(data, "head_hash", str),
                _utc(_typed(data, "head_at", str)),
                _typed(data, "rows", int),
                _utc(_typed(data, "at", str)),
                _typed(data, "kid", str),
                _typed(data, "sig", str),
            )
        except ValueError as exc:
            raise CheckpointFormatError(str(exc)) from None
        if checkpoint.payload() != {k: v for k, v in data.items() if k != "sig"}:
            raise CheckpointFormatError("fields are not in canonical form")
        return checkpoint

    def verified_by(self, keys: Iterable[VerifyingKey]) -> bool:
        """Whether one of ``keys`` (the one named by ``kid``) signed this checkpoint."""
        return any(
            key.kid == self.kid and key.verify(self.payload(), self.signature) for key in keys
        )


def _typed(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} is not a {kind.__name__}")
    return value


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("a time without its offset")
    return value


def signer_from_settings(settings: Settings, *, create: bool = True) -> CheckpointSigner | None:
    """The checkpoint key: configured, or (development only) kept in a local file, created
    once when ``create``; None when there is none (checkpoints are then off)."""
    if settings.audit_checkpoint_key is not None:
        return CheckpointSigner.from_text(settings.audit_checkpoint_key.get_secret_value())
    if settings.env != "development":
        return None
    path = settings.audit_checkpoint_key_file
    if not create and not path.exists():
        return None
    signer, created = load_or_create_dev_key(path)
    log.warning(
        "development_audit_checkpoint_key",
        file=str(path),
        created=created,
        hint="set AUTHKEEP_AUDIT_CHECKPOINT_KEY in production; this key is for this machine",
    )
    return signer


@dataclass(slots=True)
class CheckpointRun:
    """What :func:`take` signed, and the chains it refused to sign."""

    signed: list[Checkpoint] = field(default_factory=list)
    broken: list[BrokenLink] = field(default_factory=list)


def _chain_filter(org_id: uuid.UUID | None) -> AuditFilter:
    return (
        AuditFilter(org_ids=[], platform=True) if org_id is None else AuditFilter(org_ids=[org_id])
    )


def _purged(
    checkpoint: Checkpoint,
    oldest_kept: datetime | None,
    anchors: Mapping[str, set[str]],
    first_id: int | None,
) -> bool:
    """Whether a retention purge explains that ``checkpoint``'s head row is gone: it is
    older than the retention, a purge anchored its chain, and no older row of the chain
    survives (a purge removes a prefix). ``first_id``: the chain's oldest row, if any."""
    return (
        oldest_kept is not None
        and checkpoint.head_at < oldest_kept
        and checkpoint.chain in anchors
        and (first_id is None or first_id > checkpoint.head_id)
    )


async def _segment_break(
    conn: AsyncConnection,
    head: HeadRow,
    previous: Checkpoint | None,
    anchors: Mapping[str, set[str]],
    oldest_kept: datetime | None,
) -> BrokenLink | None:
    """The first row of ``head``'s chain that fails, checking only what follows
    ``previous`` when its head row is still there (else the whole chain, once a retention
    purge explains the missing head)."""
    expected: str | None = None
    after = 0
    if previous is not None:
        stored = (
            await conn.execute(
                select(AuditEntry.org_id, AuditEntry.hash).where(AuditEntry.id == previous.head_id)
            )
        ).first()
        if stored is None:
            first_id = (
                await conn.execute(
                    select(func.min(AuditEntry.id)).where(*_chain_filter(head.org_id).conditions())
                )
            ).scalar_one()
            if not _purged(previous, oldest_kept, anchors, first_id):
                return BrokenLink(
                    previous.head_id,
                    head.chain,
                    "the head of the previous checkpoint is gone and no retention purge "
                    "accounts for it: the chain's tail was cut",
                )
        else:
            if audit_rows.chain_key(stored[0]) != head.chain or stored[1] != previous.head_hash:
                return BrokenLink(
                    previous.head_id,
                    head.chain,
                    "differs from the previous checkpoint: the chain was rewritten",
                )
            expected, after = previous.head_hash, previous.head_id
    async for row in audit_rows.walk(conn, _chain_filter(head.org_id), after=after):
        if row.id > head.head_id:
            break
        if expected is None:
            if row.prev_hash != audit_rows.genesis_hash(head.chain) and row.prev_hash not in (
                anchors.get(head.chain, set())
            ):
                return BrokenLink(
                    row.id, head.chain, "first row names neither the genesis nor a purge anchor"
                )
        elif row.prev_hash != expected:
            return BrokenLink(row.id, head.chain, "prev_hash does not match the previous row")
        if row.computed_hash() != row.hash:
            return BrokenLink(row.id, head.chain, "hash does not match the row's content")
        expected = row.hash
    return None


async def take(
    db: Database,
    signer: CheckpointSigner,
    *,
    previous: Mapping[str, Checkpoint] | None = None,
    now: datetime | None = None,
    retention_days: int | None = None,
    only_moved: bool = True,
) -> CheckpointRun:
    """Sign the head of every chain that moved since ``previous`` (every chain when None,
    or when not ``only_moved``), after checking the rows not checked yet; a broken chain —
    one that does not extend its previous checkpoint, or has a bad row — is reported, not
    signed. A previous head may have been purged only if it is older than
    ``retention_days`` (None: no previous head may be missing)."""
    known = previous or {}
    run = CheckpointRun()
    async with snapshot(db) as conn:
        heads = await audit_rows.chain_heads(conn)
        anchors = await audit_rows.purge_anchors(conn)
        when = now or utcnow()
        oldest_kept = None if retention_days is None else when - timedelta(days=retention_days)
        present = {head.chain for head in heads}
        for chain, gone in sorted(known.items()):
            if chain not in present and not _purged(gone, oldest_kept, anchors, None):
                run.broken.append(
                    BrokenLink(
                        gone.head_id,
                        chain,
                        "the chain is gone and no retention purge accounts for it: deleted",
                    )
                )
        for head in heads:
            last = known.get(head.chain)
            if (
                only_moved
                and last is not None
                and (last.head_id, last.head_hash) == (head.head_id, head.head_hash)
            ):
                continue
            broken = await _segment_break(conn, head, last, anchors, oldest_kept)
            if broken is not None:
                run.broken.append(broken)
                continue
            run.signed.append(Checkpoint.sign(head, signer, when))
    return run


class CheckpointWriter:
    """Appends checkpoints to the day's file in ``directory`` (if any) and to the log."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def write(self, checkpoints: Sequence[Checkpoint]) -> Path | None:
        """Write ``checkpoints``; returns the file written (None: the log only)."""
        path = None
        if checkpoints and self.directory is not None:
            day = checkpoints[0].at.astimezone(UTC).date().isoformat()
            path = self.directory / f"{FILE_PREFIX}{day}{FILE_SUFFIX}"
            self.directory.mkdir(parents=True, exist_ok=True)
            data = "".join(checkpoint.line() + "\n" for checkpoint in checkpoints).encode()
            # O_APPEND: one write() per batch lands whole at the end of the file, so
            # several workers writing at once interleave lines, never bytes.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        for checkpoint in checkpoints:
            log.info("audit_checkpoint", checkpoint=checkpoint.line())
        return path


@dataclass(slots=True)
class CheckpointFiles:
    """Checkpoints read from a directory, and the lines that failed to verify."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: int = 0


def read_directory(directory: Path, keys: Sequence[VerifyingKey]) -> CheckpointFiles:
    """Every checkpoint in ``directory``'s ``*.jsonl`` files whose signature verifies;
    every other line (malformed, altered, forged, unknown key) is a problem."""
    found = CheckpointFiles()
    for path in sorted(directory.glob(f"*{FILE_SUFFIX}")):
        found.files += 1
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                where = f"{path.name}:{number}"
                try:
                    checkpoint = Checkpoint.parse(line)
                except CheckpointFormatError as exc:
                    found.problems.append(f"{where}: not a checkpoint ({exc})")
                    continue
                if not any(key.kid == checkpoint.kid for key in keys):
                    found.problems.append(
                        f"{where}: signed by key {checkpoint.kid}, which is not trusted"
                    )
                elif not checkpoint.verified_by(keys):
                    found.problems.append(
                        f"{where}: bad signature: the checkpoint was altered or forged"
                    )
                else:
                    found.checkpoints.append(checkpoint)
    return found


def latest_by_chain(checkpoints: Iterable[Checkpoint]) -> dict[str, Checkpoint]:
    """The newest checkpoint (highest head) of each chain."""
    latest: dict[str, Checkpoint] = {}
    for checkpoint in checkpoints:
        held = latest.get(checkpoint.chain)
        if held is None or checkpoint.head_id > held.head_id:
            latest[checkpoint.chain] = checkpoint
    return latest


@dataclass(frozen=True, slots=True)
class _Span:
    first_id: int
    last_id: int


async def check(
    db: Database,
    checkpoints: Sequence[Checkpoint],
    *,
    retention_days: int,
    now: datetime | None = None,
) -> list[str]:
    """What the database contradicts in ``checkpoints`` (already signature-checked): each
    checkpointed head row must still be in its chain with its hash, unless a retention
    purge removed it. Returns one message per contradiction."""
    unique = {(c.chain, c.head_id, c.head_hash): c for c in checkpoints}
    ids = sorted({c.head_id for c in unique.values()})
    oldest_kept = (now or utcnow()) - timedelta(days=retention_days)
    problems: list[str] = []
    async with snapshot(db) as conn:
        anchors = await audit_rows.purge_anchors(conn)
        spans = {
            audit_rows.chain_key(org_id): _Span(int(first), int(last))
            for org_id, first, last in await conn.execute(
                select(
                    AuditEntry.org_id, func.min(AuditEntry.id), func.max(AuditEntry.id)
                ).group_by(AuditEntry.org_id)
            )
        }
        stored: dict[int, tuple[str, str]] = {}
        for start in range(0, len(ids), 1000):
            rows = await conn.execute(
                select(AuditEntry.id, AuditEntry.org_id, AuditEntry.hash).where(
                    AuditEntry.id.in_(ids[start : start + 1000])
                )
            )
            for row_id, org_id, row_hash in rows:
                stored[int(row_id)] = (audit_rows.chain_key(org_id), str(row_hash))
    for cp in sorted(unique.values(), key=lambda c: (c.chain, c.head_id)):
        signed = f"checkpoint of {_time(cp.at)}"
        row = stored.get(cp.head_id)
        if row is not None:
            if row != (cp.chain, cp.head_hash):
                problems.append(
                    f"row {cp.head_id} (chain {cp.chain}) is not the row of the {signed}: "
                    "the chain was rewritten after it (rows edited and re-hashed)"
                )
            continue
        span = spans.get(cp.chain)
        if _purged(cp, oldest_kept, anchors, None if span is None else span.first_id):
            continue
        if span is None:
            problems.append(
                f"chain {cp.chain} is gone: the {signed} saw {cp.rows} rows up to row "
                f"{cp.head_id}; the chain was deleted"
            )
        elif span.last_id < cp.head_id:
            problems.append(
                f"chain {cp.chain} ends at row {span.last_id}, before row {cp.head_id} of the "
                f"{signed}: its tail was cut"
            )
        else:
            problems.append(
                f"row {cp.head_id} of chain {cp.chain} ({signed}) is gone, and no retention "
                "purge accounts for it"
            )
    return problems


class CheckpointScheduler:
    """``authkeep serve``'s periodic checkpoint: every ``interval`` seconds, sign the chains
    that moved. Each worker runs one; duplicates are harmless (each is a valid statement)
    and a worker signs a chain again only once it has moved."""

    def __init__(
        self,
        db: Database,
        signer: CheckpointSigner,
        writer: CheckpointWriter,
        interval: float,
        *,
        retention_days: int | None = None,
    ) -> None:
        self._db = db
        self._retention_days = retention_days
        self._signer = signer
        self._writer = writer
        self._interval = interval
        self._last: dict[str, Checkpoint] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop; the first checkpoint comes one interval after the start."""
        if self._writer.directory is not None and self._writer.directory.is_dir():
            # Resume from this key's newest checkpoints: only newer rows need checking.
            found = read_directory(self._writer.directory, [self._signer.verifying_key])
            self._last = latest_by_chain(found.checkpoints)
        self._task = asyncio.create_task(self._loop(), name="authkeep-audit-checkpoints")

    async def stop(self) -> None:
        """Stop the loop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def tick(self) -> CheckpointRun:
        """Take and write one round of checkpoints now."""
        run = await take(
            self._db, self._signer, previous=self._last, retention_days=self._retention_days
        )
        await asyncio.to_thread(self._writer.write, run.signed)
        for checkpoint in run.signed:
            self._last[checkpoint.chain] = checkpoint
        for broken in run.broken:
            log.error(
                "audit_checkpoint_refused",
                chain=broken.chain,
                row_id=broken.row_id,
                reason=broken.reason,
            )
        return run

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.tick()
            except Exception:  # a failed round must not end the loop; the next one retries
                log.exception("audit_checkpoint_failed")


def scheduler_from_settings(settings: Settings, db: Database) -> CheckpointScheduler | None:
    """The periodic checkpoint task ``settings`` ask for, or None (no key, or interval 0)."""
    if settings.audit_checkpoint_interval_seconds == 0:
        return None
    signer = signer_from_settings(settings)
    if signer is None:
        return None
    return CheckpointScheduler(
        db,
        signer,
        CheckpointWriter(settings.audit_checkpoint_dir),
        settings.audit_checkpoint_interval_seconds,
        retention_days=settings.audit_retention_days,
    )
