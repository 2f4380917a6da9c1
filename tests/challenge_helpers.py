"""Solving ALTCHA challenges in tests, with the ``altcha`` library's own solver (at a low
cost: ``TEST_POW_COST``)."""

from __future__ import annotations

import base64
import json
from typing import Any

from altcha.v1 import solve_challenge

TEST_POW_COST = 2000
"""``AUTHKEEP_CHALLENGE_ALTCHA_MAX_NUMBER`` in tests: at most a few milliseconds to solve."""


def solve(challenge: dict[str, Any]) -> str:
    """The base64 payload the ALTCHA widget would submit for ``challenge``."""
    solution = solve_challenge(
        challenge["challenge"], challenge["salt"], challenge["algorithm"], challenge["maxnumber"]
    )
    assert solution is not None, "challenge has no solution within maxnumber"
    return encode(
        {
            "algorithm": challenge["algorithm"],
            "challenge": challenge["challenge"],
            "number": solution.number,
            "salt": challenge["salt"],
            "signature": challenge["signature"],
        }
    )


def encode(payload: dict[str, Any]) -> str:
    """A payload dict as the widget encodes it (base64 of its JSON)."""
    return base64.b64encode(json.dumps(payload).encode()).decode()


def decode(solution: str) -> dict[str, Any]:
    """The payload dict of an encoded solution."""
    return dict(json.loads(base64.b64decode(solution)))
