"""Password spraying with and without the challenge after failed logins (docs/challenge.md).

    .venv/bin/python bench/spray.py [--seconds 5] [--rounds 3] [--connections 16]

Two ``authkeep serve`` processes (one worker, SQLite, Redis-free, log level WARNING, audit
off) run at the same time: the challenge off (``AUTHKEEP_CHALLENGE_AFTER_FAILURES=0``) and on
(the default 3, default cost). Their lock-out budgets are raised out of reach on both — a
sprayer with many addresses stays under every per-IP and per-account limit — so the
challenge is the only difference. wrk (a Lua script) plays the sprayer: one password, a new
email on every request, from one address, in ``--rounds`` rounds alternating the servers.

Per run it reports what the attacker achieves — **password checks per second** (answers
"Incorrect email or password"; a 401 ``challenge_required`` checked nothing) — and what the
server spends: **CPU seconds per second** and **CPU ms per request**, read from
``/proc/<pid>/stat`` (utime + stime of every process in the server's process group, so the
hashing pool's threads are included) before and after the run.

A sprayer that *solves* each challenge pays the proof of work per guess: the script times the
``altcha`` library's own solver (pure Python, SHA-256 from hashlib) on fresh challenges at
the configured cost and reports the guesses per second and core it allows. A native GPU
solver is faster; the cost setting is what scales it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import TEST_SECRET, free_port, wait_ready

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

SPRAY_LUA = """
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  checked = 0
  challenged = 0
  other = 0
end
request = function()
  counter = counter + 1
  local body = '{"email": "victim-' .. tid .. '-' .. counter ..
    '@example.com", "password": "Summer2024!"}'
  return wrk.format("POST", "/api/v1/auth/login",
    {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  if status == 401 and string.find(body, "challenge_required", 1, true) then
    challenged = challenged + 1
  elseif status == 401 then
    checked = checked + 1
  else
    other = other + 1
  end
end
done = function(summary, latency, requests)
  local c, h, o = 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("checked")
    h = h + t:get("challenged")
    o = o + t:get("other")
  end
  io.write(string.format("SPRAY checked=%d challenged=%d other=%d\\n", c, h, o))
end
"""

OUT_OF_REACH = "1000000000 per 15 minutes"


@dataclass(frozen=True)
class Run:
    """One wrk run against one server."""

    seconds: float
    checked: int
    challenged: int
    other: int
    cpu_seconds: float

    @property
    def requests(self) -> int:
        return self.checked + self.challenged + self.other

    @property
    def checks_per_second(self) -> float:
        return self.checked / self.seconds

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_second(self) -> float:
        return self.cpu_seconds / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_seconds / max(1, self.requests)


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in process group ``pgid`` (all their threads)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces: fields start after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # field 5, pgrp
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / ticks


@contextlib.contextmanager
def serve(challenge_after: int, workdir: Path) -> Iterator[tuple[str, int]]:
    """``authkeep serve`` on a fresh SQLite file; yields its URL and process-group id."""
    port = free_port()
    name = f"c{challenge_after}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHKEEP_")}
    env.update(
        {
            "AUTHKEEP_ENV": "test",
            "AUTHKEEP_SECRET_KEY": TEST_SECRET,
            "AUTHKEEP_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / name}.db",
            "AUTHKEEP_LOG_LEVEL": "WARNING",
            "AUTHKEEP_AUDIT_ENABLED": "false",
            "AUTHKEEP_OUTBOX_IN_PROCESS": "false",
            "AUTHKEEP_RATE_LIMIT_PER_MINUTE": "1000000000",
            "AUTHKEEP_LOGIN_RATE_LIMIT": OUT_OF_REACH,
            "AUTHKEEP_LOGIN_IP_FAILURE_LIMIT": OUT_OF_REACH,
            "AUTHKEEP_LOGIN_ACCOUNT_FAILURE_LIMITS": OUT_OF_REACH,
            "AUTHKEEP_CHALLENGE_AFTER_FAILURES": str(challenge_after),
        }
    )
    command = [sys.executable, "-m", "authkeep", "serve", "--port", str(port)]
    log = (workdir / f"{name}.log").open("w")
    proc = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base + "/health", timeout=60)
        yield base, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


def spray(base: str, pgid: int, seconds: int, connections: int) -> Run:
    """One wrk run of the spraying script, with the server's CPU time around it."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(SPRAY_LUA)
    try:
        before = group_cpu_seconds(pgid)
        started = time.monotonic()
        out = subprocess.run(
            [
                "wrk",
                "-t",
                "2",
                "-c",
                str(connections),
                "-d",
                f"{seconds}s",
                "--timeout",
                "30s",
                "-s",
                script.name,
                base + "/api/v1/auth/login",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
        elapsed = time.monotonic() - started
        cpu = group_cpu_seconds(pgid) - before
    finally:
        os.unlink(script.name)
    match = re.search(r"SPRAY checked=(\d+) challenged=(\d+) other=(\d+)", out)
    if match is None:
        raise RuntimeError("wrk script printed no counts:\n" + out)
    checked, challenged, other = (int(x) for x in match.groups())
    return Run(elapsed, checked, challenged, other, cpu)


def median_run(runs: list[Run]) -> Run:
    """The run with the median number of requests per second."""
    return sorted(runs, key=lambda run: run.requests_per_second)[len(runs) // 2]


def solve_rate(max_number: int, samples: int) -> tuple[float, float]:
    """Median seconds to solve a fresh challenge at ``max_number`` with the altcha library's
    solver, and the guesses per second per core that allows."""
    from altcha.v1 import solve_challenge

    from authkeep.security.proof_of_work import ProofOfWork

    pow_ = ProofOfWork([os.urandom(32)], max_number=max_number, ttl_seconds=300)
    times = []
    for _ in range(samples):
        c = pow_.issue()
        started = time.perf_counter()
        solve_challenge(c["challenge"], c["salt"], c["algorithm"], c["maxnumber"])
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return median, 1 / median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--solve-samples", type=int, default=5)
    args = parser.parse_args()
    from authkeep.settings import Settings

    cost = Settings.model_fields["challenge_altcha_max_number"].default
    runs: dict[str, list[Run]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="bench-spray-") as tmp:
        workdir = Path(tmp)
        with serve(0, workdir) as (off_url, off_pid), serve(3, workdir) as (on_url, on_pid):
            for base, pid in ((off_url, off_pid), (on_url, on_pid)):
                spray(base, pid, 1, args.connections)  # warm-up (and, on "on", the 3 failures)
            for _ in range(args.rounds):
                runs["off"].append(spray(off_url, off_pid, args.seconds, args.connections))
                runs["on"].append(spray(on_url, on_pid, args.seconds, args.connections))
    median_solve, per_core = solve_rate(cost, args.solve_samples)
    print(
        f"## Password spraying, with and without the challenge ({args.rounds} rounds × "
        f"{args.seconds} s, {args.connections} connections, {os.cpu_count()} cores)\n"
    )
    print(
        "| challenge | password checks/s | requests/s | server CPU s/s "
        "| server CPU ms/request | other answers |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, key in (
        ("off (`AUTHKEEP_CHALLENGE_AFTER_FAILURES=0`)", "off"),
        ("on (3, unsolved)", "on"),
    ):
        run = median_run(runs[key])
        print(
            f"| {label} | {run.checks_per_second:.1f} | {run.requests_per_second:.0f} | "
            f"{run.cpu_per_second:.2f} | {run.cpu_ms_per_request:.3f} | {run.other} |"
        )
    print(
        f"\nA sprayer that solves: the altcha library's solver needs {median_solve:.2f} s "
        f"(median of {args.solve_samples}) per challenge at the default cost "
        f"(maxnumber {cost:,}) — {per_core:.2f} guesses per second per core, against the "
        f"server's one hash and one HMAC to check it."
    )


if __name__ == "__main__":
    main()
