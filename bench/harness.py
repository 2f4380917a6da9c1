"""Shared benchmark plumbing: start real server processes, drive them with wrk, parse results.

Every benchmark in bench/ uses this so numbers are comparable: loopback only, bounded in time,
servers as separate processes (uvicorn), load from wrk (Debian's package) in another process.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
_BENCH_DATA_KEY = base64.urlsafe_b64encode(
    hashlib.sha256(b"authkeep bench data key (public: benchmarks only)").digest()
).decode()
BENCH_DATA_KEYS = f'["bench-1:{_BENCH_DATA_KEY.rstrip("=")}"]'
"""``AUTHKEEP_DATA_KEYS`` of every bench server: without it each would use the development
key file of its working directory, and servers started from ``bench/`` (the baseline apps
are imported from there) would seal and index emails under another key than the rest —
an account made by one would be unknown to the next."""
PG_ADMIN = os.environ.get("AUTHKEEP_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("AUTHKEEP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

Key = TypeVar("Key", bound=Hashable)


def pg(sql: str, database: str | None = None) -> None:
    """Run one statement as the bench's PostgreSQL administrator (``AUTHKEEP_BENCH_PG_URL``),
    in ``database`` (default: the one that URL names)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        url = PG_ADMIN if database is None else PG_ADMIN.rsplit("/", 1)[0] + "/" + database
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def pg_url(database: str, driver: str = "postgresql+asyncpg") -> str:
    """The SQLAlchemy URL of ``database`` on the bench's PostgreSQL server."""
    return PG_ADMIN.rsplit("/", 1)[0].replace("postgresql", driver, 1) + "/" + database


def authkeep_token(base: str, email: str, password: str) -> str:
    """Register ``email`` on the authkeep at ``base``, log in, return the access token."""
    body = {"email": email, "password": password}
    httpx.post(base + "/api/v1/auth/register", json=body, timeout=30).raise_for_status()
    response = httpx.post(base + "/api/v1/auth/login", json=body, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready in {timeout} s")


@contextlib.contextmanager
def server(
    command: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    health: str = "/health",
    cwd: Path | None = None,
) -> Iterator[str]:
    """Run ``command`` (which must listen on ``port``) until the block ends; yield its URL."""
    full_env = {**os.environ, **(env or {})}
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - outlives this frame; closed in finally
        prefix="bench-server-", suffix=".log", delete=False
    )
    proc = subprocess.Popen(
        list(command),
        env=full_env,
        cwd=cwd or ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(base + health)
        except RuntimeError:
            log.flush()
            sys.stderr.write(Path(log.name).read_text()[-4000:])
            raise
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        os.unlink(log.name)


def uvicorn_command(app: str, port: int, *, factory: bool = False, workers: int = 1) -> list[str]:
    """uvicorn serving ``module:attr``, configured like ``authkeep serve``."""
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--no-proxy-headers",
        "--no-server-header",
        "--log-level",
        "warning",
    ]
    if factory:
        cmd.append("--factory")
    return cmd


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    detail: str = ""
    """What wrk said about the errors (socket errors; the first non-2xx answer when the
    script records it, see :data:`FIRST_NON_2XX_LUA`)."""

    def row(self) -> str:
        return (
            f"{self.requests_per_second:10.0f} {self.p50_ms:9.2f} "
            f"{self.p99_ms:9.2f} {self.errors:7d}"
        )


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str,
    *,
    seconds: int = 5,
    connections: int = 64,
    threads: int = 2,
    headers: Mapping[str, str] | None = None,
    script: str | None = None,
    timeout: int = 10,
) -> WrkResult:
    """Run wrk against ``url`` for ``seconds`` and parse its latency report."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    # wrk's default 2 s timeout would count a queued login (64 in flight, 20 ms of hashing
    # each, 2 cores) as an error instead of measuring its latency.
    cmd = ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"]
    cmd += ["--timeout", f"{timeout}s"]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    script_file = None
    if script:
        script_file = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
        script_file.write(script)
        script_file.close()
        cmd += ["-s", script_file.name]
    cmd.append(url)
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, check=True, timeout=seconds + 30
        ).stdout
    finally:
        if script_file:
            os.unlink(script_file.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # Anchored: "+/- Stdev" columns also end in "50%" or "99%".
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    detail = "; ".join(
        line.strip() for line in out.splitlines() if "Socket errors" in line or "NON2XX" in line
    )
    return WrkResult(rps, p50, p99, total, errors, detail)


FIRST_NON_2XX_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  if status >= 300 and not first then first = status .. " " .. string.sub(body or "", 1, 160) end
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    local found = t:get("first")
    if found then io.write("FIRST_NON2XX " .. found .. "\\n") end
  end
end
"""
"""Appended to a wrk script: wrk then reports the first non-2xx answer of each thread."""


def header() -> str:
    """Column titles matching :meth:`WrkResult.row`."""
    return f"{'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}"


def median_run(results: Sequence[WrkResult]) -> WrkResult:
    """The run with the median requests/s (of an even count, the faster of the middle two).

    A whole run rather than per-column medians, so that its latencies and errors belong to
    the throughput reported next to them.
    """
    if not results:
        raise ValueError("median_run needs at least one run")
    return sorted(results, key=lambda r: r.requests_per_second)[len(results) // 2]


def alternate_rounds(
    measurements: Mapping[Key, Callable[[], WrkResult]], rounds: int
) -> dict[Key, list[WrkResult]]:
    """Call every measurement once per round, in the mapping's order, ``rounds`` times.

    The CPU's speed drifts by 10-20 % from one minute to the next on a shared machine:
    measuring variants in turn, round after round, spreads that drift over all of them
    instead of handing it to whichever ran last. Returns every run, per key, in order.
    """
    runs: dict[Key, list[WrkResult]] = {key: [] for key in measurements}
    for _ in range(rounds):
        for key, measure in measurements.items():
            runs[key].append(measure())
    return runs


def rounds_note(rounds: int) -> str:
    """How the reported runs were chosen, for a table's header line."""
    plural = "" if rounds == 1 else "s"
    return f"{rounds} alternating round{plural}, median run"


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc``'s process group, then SIGKILL if it is not gone in 30 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def counting_sink(script: Path, ready: Callable[[int], object], what: str) -> Iterator[int]:
    """A receiver (``script --port N``) in its own process, up once ``ready(port)`` answers
    without raising; yields its port and stops it at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port)], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready(port)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the {what} did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        stop_process(proc)
