"""ALTCHA proof of work (``authkeep.security.proof_of_work``): what a valid solution is, and
every way of cheating that must be refused."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from altcha.v1 import ChallengeOptions, create_challenge

from authkeep.security.proof_of_work import ProofOfWork
from challenge_helpers import TEST_POW_COST, decode, encode, solve

KEY = b"k" * 32
OLD_KEY = b"o" * 32


def pow_(*keys: bytes, ttl: int = 300) -> ProofOfWork:
    return ProofOfWork(keys or (KEY,), max_number=TEST_POW_COST, ttl_seconds=ttl)


def test_a_solved_challenge_verifies_and_names_its_challenge() -> None:
    issued = pow_().issue()
    assert issued["maxnumber"] == TEST_POW_COST
    assert issued["algorithm"] == "SHA-256"
    solved = pow_().verify(solve(issued))
    assert solved is not None
    assert solved.challenge_id == issued["challenge"]


def test_a_wrong_number_is_refused() -> None:
    payload = decode(solve(pow_().issue()))
    payload["number"] = payload["number"] + 1
    assert pow_().verify(encode(payload)) is None


@pytest.mark.parametrize("field", ["salt", "challenge", "signature"])
def test_a_tampered_field_is_refused(field: str) -> None:
    payload = decode(solve(pow_().issue()))
    value = payload[field]
    payload[field] = value[:-2] + ("00" if value[-2:] != "00" else "11")
    assert pow_().verify(encode(payload)) is None


def test_a_later_expiry_in_the_salt_is_refused() -> None:
    """Pushing ``expires`` forward changes the hashed challenge: the signature no longer
    matches (a solution cannot be kept for later by editing its salt)."""
    payload = decode(solve(pow_().issue()))
    salt, _, rest = payload["salt"].partition("?expires=")
    payload["salt"] = f"{salt}?expires={int(rest.rstrip('&')) + 86400}&"
    assert pow_().verify(encode(payload)) is None


def test_a_challenge_signed_with_another_key_is_refused() -> None:
    foreign = ProofOfWork([b"x" * 32], max_number=TEST_POW_COST, ttl_seconds=300).issue()
    assert pow_().verify(solve(foreign)) is None


def test_a_challenge_without_expiry_is_refused() -> None:
    """The library accepts a challenge without ``expires`` forever; authkeep never issues
    one and refuses it, even when correctly signed."""
    bare = create_challenge(ChallengeOptions(max_number=TEST_POW_COST, hmac_key=KEY)).to_dict()
    bare["maxnumber"] = bare.pop("maxNumber")
    assert pow_().verify(solve(bare)) is None


def test_an_expired_challenge_is_refused() -> None:
    solution = solve(pow_(ttl=60).issue())
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=61)):
        assert pow_().verify(solution) is None
    assert pow_().verify(solution) is not None


def test_rotation_a_challenge_signed_with_a_previous_key_still_verifies() -> None:
    in_flight = solve(pow_(OLD_KEY).issue())
    assert pow_(KEY, OLD_KEY).verify(in_flight) is not None
    assert pow_(KEY).verify(in_flight) is None


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not base64 !",
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(b"{}").decode(),
        encode(
            {
                "algorithm": "SHA-1",
                "challenge": "a",
                "number": 1,
                "salt": "b?expires=9&",
                "signature": "c",
            }
        ),
        encode(
            {
                "algorithm": "SHA-256",
                "challenge": "a",
                "number": True,
                "salt": "b",
                "signature": "c",
            }
        ),
        encode(
            {"algorithm": "SHA-256", "challenge": "a", "number": -1, "salt": "b", "signature": "c"}
        ),
        "A" * 5000,
    ],
)
def test_malformed_payloads_are_refused_not_raised(payload: str) -> None:
    assert pow_().verify(payload) is None
