"""The rotation schedule of asymmetric signing keys (``authkeep keys rotate``).

Run it daily (cron, a Kubernetes CronJob) against ``AUTHKEEP_JWT_KEYS_DIR``; each run does
what is due and nothing else, so running it twice is harmless:

1. **Generate** a successor when none is pending and the signing key will reach the maximum
   age within the pre-publication period (or when forced). The successor's kid starts with
   the moment it becomes active, ``prepublish`` from now; until then it is only published
   in the JWKS. A verifier that caches the JWKS (for hours, often) therefore already knows
   the key when the first token it signed arrives — publishing and signing at once would
   make every such verifier refuse good tokens until its cache expires.
2. **Retire** (delete) a key once its successor has been signing for longer than the
   longest token lifetime: every token it signed has expired, so nothing is logged out,
   and a private key that no longer serves any purpose is no longer there to leak.

The switch from the old key to the new one needs no restart at the moment it happens (the
ring picks the newest active key on every signature); the workers must only have loaded
the new key, i.e. been restarted once, within the pre-publication period.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from authkeep.security.keys import generate_key, kid_activation, load_private_key

__all__ = ["RotationResult", "key_files", "key_started", "rotate"]


def key_files(directory: Path) -> list[Path]:
    """The key files of ``directory``, in ring order (oldest first)."""
    return sorted(directory.glob("*.pem"))


def key_started(path: Path) -> datetime:
    """When the key in ``path`` started (or starts) signing: the time in its kid, else the
    file's modification time (a key named by hand)."""
    started = kid_activation(path.stem)
    if started is not None:
        return started
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


@dataclass(slots=True)
class RotationResult:
    """What one run of the schedule did."""

    signing: str
    """The kid that signs now."""
    generated: str | None = None
    """The kid of the key made by this run (pre-published), if any."""
    active_from: datetime | None = None
    retired: list[str] = field(default_factory=list)


def rotate(
    directory: Path,
    *,
    max_age: timedelta,
    prepublish: timedelta,
    retire_after: timedelta,
    force: bool = False,
    algorithm: Literal["EdDSA", "RS256"] | None = None,
    now: datetime | None = None,
) -> RotationResult:
    """Run the schedule once on ``directory`` (see the module docstring).

    Args:
        max_age: how long a key may sign; zero means only ``force`` generates.
        prepublish: how long a new key is published before it signs.
        retire_after: the longest token lifetime (plus leeway): how long after its
            successor started signing a key is still needed to verify.
        force: generate a successor now, whatever the signing key's age (a suspected leak:
            then also shorten ``prepublish``).
        algorithm: of the new key; default: the signing key's (EdDSA for the first key).
        now: the current time (tests).
    """
    moment = now or datetime.now(UTC)
    files = key_files(directory)
    if not files:
        path = generate_key(directory, algorithm or "EdDSA", active_from=moment)
        return RotationResult(signing=path.stem, generated=path.stem, active_from=moment)

    started = [(path, key_started(path)) for path in files]
    active = [(path, at) for path, at in started if at <= moment]
    signing_path, signing_since = active[-1] if active else started[0]
    result = RotationResult(signing=signing_path.stem)

    # Retire: each key whose next *active* key has signed for longer than any token lives.
    for (path, _), (_, successor_since) in itertools.pairwise(started):
        if path == signing_path:
            break
        if successor_since <= moment and moment - successor_since >= retire_after:
            path.unlink()
            result.retired.append(path.stem)

    pending = any(at > moment for _, at in started)
    due = max_age > timedelta(0) and moment - signing_since >= max_age - prepublish
    if force or (due and not pending):
        if algorithm is None:
            rsa = load_private_key(signing_path).algorithm == "RS256"
            algorithm = "RS256" if rsa else "EdDSA"
        active_from = moment + prepublish
        path = generate_key(directory, algorithm, active_from=active_from)
        result.generated = path.stem
        result.active_from = active_from
    return result
