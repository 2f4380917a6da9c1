"""ALTCHA proof-of-work challenges (the ``altcha`` library's v1 format, SHA-256).

A challenge is ``{algorithm, challenge, maxnumber, salt, signature}``: the client must find
the number ``n`` (0 ≤ n ≤ maxnumber, drawn at random by the server) such that
``SHA-256(salt + n) == challenge``, which takes about ``maxnumber / 2`` hashes on average. The
server's check costs one hash and one HMAC. The ALTCHA widget solves this format (it fetches
a challenge from its ``challengeurl``) and submits the base64 JSON payload
``{algorithm, challenge, number, salt, signature}``.

Rules enforced by :meth:`ProofOfWork.verify`:

* the signature is an HMAC-SHA-256 of the challenge under a key only the server holds (the
  newest key of a ring signs, every key verifies: a secret rotation fails no challenge in
  flight), and
  the salt (with its ``expires`` parameter) is bound into the hashed challenge: a forged or
  edited challenge (a cheaper ``maxnumber``, a later ``expires``) is refused;
* every challenge carries ``expires``; one without it, or past it, is refused (a solution
  computed in advance and kept cannot be spent later);
* only SHA-256 is accepted (a client-chosen SHA-1 would only weaken the signature);
* the caller gets the challenge's id back to enforce single use (:mod:`authkeep.services.
  challenge.spent`): this module holds no state.

This module is a primitive: it imports nothing else of authkeep.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from altcha.v1 import SHA256, ChallengeOptions, create_challenge, extract_params, verify_solution

__all__ = ["ALGORITHM", "ProofOfWork", "SolvedChallenge"]

ALGORITHM = SHA256
# A payload is ~300 characters; anything much larger is not one (and is not worth parsing).
_MAX_PAYLOAD = 2048


@dataclass(frozen=True, slots=True)
class SolvedChallenge:
    """A valid solution: the challenge's id (to spend it once) and when it expires."""

    challenge_id: str
    expires_at: int
    """Unix time after which the challenge is refused anyway."""


class ProofOfWork:
    """Issue ALTCHA challenges signed with the first of ``keys``; accept any of them."""

    def __init__(self, keys: Sequence[bytes], *, max_number: int, ttl_seconds: int) -> None:
        if not keys or max_number < 1 or ttl_seconds < 1:
            raise ValueError("a key is needed; max_number and ttl_seconds must be positive")
        self._keys = tuple(keys)
        self.max_number = max_number
        self.ttl_seconds = ttl_seconds

    def issue(self) -> dict[str, Any]:
        """A new challenge, as the ALTCHA widget reads it."""
        expires = datetime.fromtimestamp(int(time.time()) + self.ttl_seconds, UTC)
        challenge = create_challenge(
            ChallengeOptions(
                algorithm=ALGORITHM,
                max_number=self.max_number,
                hmac_key=self._keys[0],
                expires=expires,
            )
        )
        return {
            "algorithm": challenge.algorithm,
            "challenge": challenge.challenge,
            "maxnumber": challenge.max_number,
            "salt": challenge.salt,
            "signature": challenge.signature,
        }

    def verify(self, payload: str) -> SolvedChallenge | None:
        """The solved challenge when ``payload`` (base64 JSON, as the widget submits it) is
        a correct, unexpired solution of a challenge this server signed; else None."""
        data = _decode(payload)
        if data is None:
            return None
        expires = _expires_of(data["salt"])
        if expires is None or expires < time.time():
            return None
        solution = {
            "algorithm": ALGORITHM,
            "challenge": data["challenge"],
            "number": data["number"],
            "salt": data["salt"],
            "signature": data["signature"],
        }
        for key in self._keys:
            ok, _error = verify_solution(solution, key, check_expires=True)  # type: ignore[call-overload]
            # The library compares the signature with ==: compare again in constant time,
            # so that its timing cannot be used to forge a signature byte by byte.
            expected = hmac.new(key, data["challenge"].encode(), hashlib.sha256).hexdigest()
            if ok and hmac.compare_digest(expected, data["signature"]):
                return SolvedChallenge(challenge_id=data["challenge"], expires_at=expires)
        return None


def _decode(payload: str) -> dict[str, Any] | None:
    if len(payload) > _MAX_PAYLOAD:
        return None
    try:
        data = json.loads(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("algorithm") != ALGORITHM:
        return None
    number = data.get("number")
    # bool is an int in Python; a number outside the range was never drawn by issue().
    if type(number) is not int or number < 0:
        return None
    fields = ("challenge", "salt", "signature")
    if not all(isinstance(data.get(name), str) and data[name] for name in fields):
        return None
    return data


def _expires_of(salt: str) -> int | None:
    params = extract_params({"salt": salt})  # type: ignore[typeddict-item]
    values = params.get("expires", [])
    # One expires only: two would let the library and this check read different ones.
    if len(values) != 1 or not values[0].isdigit():
        return None
    return int(values[0])
