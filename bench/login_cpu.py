"""Where a login's CPU goes: the password hash, and everything else (issue 18's "at most
3 ms outside the hash").

One `authkeep serve`-shaped server (one uvicorn worker, PostgreSQL, Redis revocation and the
rate limiter on Redis, audit on: production's shape), a storm of logins from wrk, and the CPU
each party spent during it, read from ``/proc`` before and after:

- the server's **event loop** (its main thread: request parsing, the limiter's calls, the
  queries' driver work, JWT signing, the audit row, logs) and its **hash threads** (the
  ``BoundedPool`` that runs argon2id; nothing else runs there during a login storm), per
  thread from ``/proc/<pid>/task/<tid>/stat``;
- **PostgreSQL** (every process of the cluster: backends, WAL writer, checkpointer) and
  **Redis**;
- **wrk**, the load generator, reported apart: it is not the login's cost.

Divided by the logins wrk counted, that is milliseconds of CPU per login. With ``--profile``,
py-spy samples the event loop during a second storm and the hottest frames are printed (the
flame graph goes to ``--profile-out`` as speedscope JSON), to show what the remaining
milliseconds are.

    .venv/bin/python bench/login_cpu.py [--seconds 10] [--accounts 64] [--profile]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    REDIS,
    TEST_SECRET,
    free_port,
    pg,
    pg_url,
    server,
    uvicorn_command,
    wrk,
)

PASSWORD = "correct horse battery staple 42"
TICKS = os.sysconf("SC_CLK_TCK")
# Every account logs in from the same address several times a minute: the limits are raised
# out of reach so that nothing is refused, while every check still runs (on Redis). The
# per-email limit stays a realistic size (a moving window keeps one entry per hit).
UNREACHABLE = {
    "AUTHKEEP_RATE_LIMIT_ENABLED": "true",
    "AUTHKEEP_RATE_LIMIT_PER_MINUTE": "100000000",
    "AUTHKEEP_LOGIN_RATE_LIMIT": "100/minute",
    "AUTHKEEP_CHALLENGE_AFTER_FAILURES": "0",
}
LOGIN_LUA = """
emails = {%s}
counter = 0
request = function()
  counter = counter + 1
  local body = '{"email": "' .. emails[(counter %% #emails) + 1] .. '", "password": "%s"}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""


def cpu_seconds(stat_path: Path, *, system_only: bool = False) -> float:
    """utime + stime (or stime alone) of one process or thread, in seconds (0 once it is
    gone)."""
    try:
        fields = stat_path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    system = int(fields[12])
    return (system if system_only else int(fields[11]) + system) / TICKS


def pids_named(name: str) -> list[int]:
    """Every process whose command is ``name`` (``/proc/<pid>/comm``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def listener_pid(port: int) -> int:
    """The process listening on ``port`` (uvicorn with one worker serves in-process)."""
    out = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split("pid=", 1)[1].split(",", 1)[0])


@dataclass
class Sample:
    """CPU seconds so far, per party."""

    loop: float
    loop_kernel: float
    hash_threads: float
    other_threads: float
    postgres: float
    redis: float


def sample(server_pid: int) -> Sample:
    loop = loop_kernel = hashing = other = 0.0
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        spent = cpu_seconds(task / "stat")
        name = (task / "comm").read_text().strip()
        if int(task.name) == server_pid:
            loop += spent
            loop_kernel += cpu_seconds(task / "stat", system_only=True)
        elif name == "authkeep-hash":
            hashing += spent
        else:
            other += spent
    postgres = sum(cpu_seconds(Path(f"/proc/{pid}/stat")) for pid in pids_named("postgres"))
    redis = sum(cpu_seconds(Path(f"/proc/{pid}/stat")) for pid in pids_named("redis-server"))
    return Sample(loop, loop_kernel, hashing, other, postgres, redis)


def thread_names(server_pid: int) -> collections.Counter[str]:
    return collections.Counter(
        (task / "comm").read_text().strip() for task in Path(f"/proc/{server_pid}/task").iterdir()
    )


def storm(base: str, lua: str, seconds: int, connections: int) -> tuple[int, int, float]:
    """wrk's login storm: (requests, errors, wrk's own CPU seconds)."""
    before = os.times()
    result = wrk(
        base + "/api/v1/auth/login",
        seconds=seconds,
        connections=connections,
        threads=min(2, connections),
        script=lua,
    )
    after = os.times()
    spent = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return result.requests, result.errors, spent


def profile(
    server_pid: int, base: str, lua: str, seconds: int, connections: int, out: Path
) -> None:
    """py-spy on the event loop during a storm; print the frames it was most often in."""
    spy = Path(sys.executable).parent / "py-spy"
    raw = out.with_suffix(".collapsed.txt")
    proc = subprocess.Popen(
        [str(spy), "record", "--pid", str(server_pid), "--duration", str(seconds), "--rate",
         "250", "--format", "raw", "--threads", "--gil", "--output", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    storm(base, lua, seconds, connections)
    proc.wait(timeout=seconds + 30)
    subprocess.run(
        [str(spy), "record", "--pid", str(server_pid), "--duration", "1", "--format",
         "speedscope", "--output", str(out), "--nonblocking"],
        capture_output=True,
    )  # fmt: skip
    # By package, not by frame: SQLAlchemy runs its driver calls in greenlets, whose stacks
    # py-spy cannot join to the request's, so a frame's inclusive share would be understated.
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    frames_own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        thread, *frames = stack.split(";")
        # The event loop only (py-spy names each stack's thread first), holding the GIL
        # (--gil), and not while it waits in epoll for something to do.
        if "MainThread" not in thread or not frames or frames[-1].startswith("EpollSelector"):
            continue
        count = int(count_text)
        total += count
        own[_package(frames[-1])] += count
        frames_own[frames[-1]] += count
        for package in {_package(frame) for frame in frames}:
            inclusive[package] += count
    print(f"\nevent loop holding the GIL, py-spy {seconds} s at 250 Hz: {total} samples")
    print("by package: own time, and inclusive (the package and what it calls)")
    for package, count in own.most_common(20):
        print(f"  {count / total:6.1%}  {inclusive[package] / total:6.1%}  {package}")
    print("hottest frames (own time):")
    for frame, count in frames_own.most_common(15):
        print(f"  {count / total:6.1%}  {frame}")


def _package(frame: str) -> str:
    """``authkeep/<module>`` or the top-level package of a py-spy frame's file."""
    path = frame.rpartition(" (")[2].rstrip(")").split(":")[0]
    parts = path.split("/")
    return "/".join(parts[:2]) if parts[0] == "authkeep" and len(parts) > 1 else parts[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--accounts", type=int, default=256)
    parser.add_argument(
        "--connections", type=int, default=64, help="1: logins one after another, no contention"
    )
    parser.add_argument("--profile", action="store_true", help="also py-spy the event loop")
    parser.add_argument("--profile-out", default="login-profile.speedscope.json")
    args = parser.parse_args()

    database = f"authkeep_login_cpu_{uuid.uuid4().hex[:8]}"
    pg(f'CREATE DATABASE "{database}"')
    try:
        env = {
            "AUTHKEEP_ENV": "development",
            "AUTHKEEP_SECRET_KEY": TEST_SECRET,
            "AUTHKEEP_DATABASE_URL": pg_url(database),
            "AUTHKEEP_REDIS_URL": REDIS,
            "AUTHKEEP_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
            "AUTHKEEP_LOG_LEVEL": "INFO",
            "AUTHKEEP_TRUSTED_HOSTS": '["127.0.0.1", "localhost"]',
            **UNREACHABLE,
        }
        subprocess.run(
            [sys.executable, "-m", "authkeep", "migrate"],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        emails = [f"cpu{i}@example.com" for i in range(args.accounts)]
        port = free_port()
        command = uvicorn_command("authkeep.http.app:create_app", port, factory=True)
        # The accounts first, by a server with the limiter off (sign-ups are limited per IP).
        with (
            server(command, port=port, env={**env, "AUTHKEEP_RATE_LIMIT_ENABLED": "false"}) as base,
            httpx.Client(base_url=base, timeout=60) as client,
        ):
            for email in emails:
                body = {"email": email, "password": PASSWORD}
                client.post("/api/v1/auth/register", json=body).raise_for_status()
        with server(command, port=port, env=env) as base:
            lua = LOGIN_LUA % (", ".join(f'"{e}"' for e in emails), PASSWORD)
            pid = listener_pid(port)
            wrk(base + "/api/v1/auth/login", seconds=3, connections=64, script=lua)  # warm-up
            time.sleep(2)  # the warm-up's abandoned requests drain
            before = sample(pid)
            requests, errors, wrk_cpu = storm(base, lua, args.seconds, args.connections)
            time.sleep(1)  # the storm's last answers and their commits
            after = sample(pid)
            names = thread_names(pid)
            per = {
                field: (getattr(after, field) - getattr(before, field)) * 1000 / requests
                for field in Sample.__dataclass_fields__
            }
            outside = per["loop"] + per["other_threads"] + per["postgres"] + per["redis"]
            report = {
                "logins": requests,
                "logins_per_second": requests / args.seconds,
                "errors": errors,
                "ms_per_login": per,
                "ms_outside_hash": outside,
                "wrk_ms_per_login": wrk_cpu * 1000 / requests,
                "threads": dict(names),
            }
            print(
                f"login storm: {requests} logins in {args.seconds} s "
                f"({requests / args.seconds:.1f}/s), {errors} errors; one worker, PostgreSQL, "
                "Redis (revocation + rate limiter), audit on"
            )
            print("CPU per login (ms):")
            print(
                f"  event loop (main thread)      {per['loop']:6.2f}"
                f"   ({per['loop_kernel']:.2f} of it in the kernel)"
            )
            print(f"  other threads of the server   {per['other_threads']:6.2f}")
            print(f"  PostgreSQL (all processes)    {per['postgres']:6.2f}")
            print(f"  Redis                         {per['redis']:6.2f}")
            print(f"  = outside the hash            {outside:6.2f}   (target: at most 3 ms)")
            print(f"  hash threads (argon2id)       {per['hash_threads']:6.2f}")
            print(f"  wrk (load generator)          {report['wrk_ms_per_login']:6.2f}")
            print(json.dumps(report))
            if args.profile:
                profile(pid, base, lua, args.seconds, args.connections, Path(args.profile_out))
    finally:
        pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
