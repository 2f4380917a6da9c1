"""The step-up rule itself (:class:`authkeep.services.step_up.StepUpPolicy`), without HTTP or a
database: the age boundary, the second factor when the user has one or the route asks for
it, and API keys refused. The HTTP behaviour is in ``tests/http/test_step_up.py``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from authkeep.db.users import UserRecord
from authkeep.errors import PermissionDenied, StepUpRequired
from authkeep.security.tokens import AccessClaims
from authkeep.services.authn import ApiKeyIdentity, Principal
from authkeep.services.step_up import StepUpPolicy

SIGNED_IN = 1_900_000_000
POLICY = StepUpPolicy(600)


def principal(
    *, amr: tuple[str, ...] = ("pwd",), acr: str = "aal1", mfa_enabled: bool = False
) -> Principal:
    user = UserRecord(
        uuid.uuid4(),
        "ada@example.com",
        None,
        True,
        False,
        datetime(2030, 1, 1, tzinfo=UTC),
        None,
        mfa_enabled=mfa_enabled,
    )
    claims = AccessClaims(
        user_id=str(user.id),
        session_id=str(uuid.uuid4()),
        token_id="t",
        email=user.email,
        issued_at=SIGNED_IN,
        expires_at=SIGNED_IN + 1800,
        auth_time=SIGNED_IN,
        amr=amr,
        acr=acr,
    )
    return Principal(user, claims)


def test_the_age_limit_is_inclusive_and_names_max_age() -> None:
    POLICY.require(principal(), now=SIGNED_IN + 600)
    with pytest.raises(StepUpRequired) as refused:
        POLICY.require(principal(), now=SIGNED_IN + 601)
    assert (refused.value.max_age, refused.value.acr_values) == (600, None)


def test_a_route_may_ask_for_its_own_age() -> None:
    POLICY.require(principal(), max_age=60, now=SIGNED_IN + 60)
    with pytest.raises(StepUpRequired) as refused:
        POLICY.require(principal(), max_age=60, now=SIGNED_IN + 61)
    assert refused.value.max_age == 60


def test_a_user_with_a_second_factor_needs_aal2_even_when_recent() -> None:
    with pytest.raises(StepUpRequired) as refused:
        POLICY.require(principal(mfa_enabled=True), now=SIGNED_IN)
    assert refused.value.acr_values == "aal2"
    POLICY.require(principal(amr=("pwd", "otp"), acr="aal2", mfa_enabled=True), now=SIGNED_IN)


def test_an_old_aal2_sign_in_asks_for_both() -> None:
    with pytest.raises(StepUpRequired) as refused:
        POLICY.require(
            principal(amr=("pwd", "otp"), acr="aal2", mfa_enabled=True), now=SIGNED_IN + 601
        )
    assert (refused.value.max_age, refused.value.acr_values) == (600, "aal2")


def test_require_aal2_refuses_a_user_without_a_second_factor() -> None:
    with pytest.raises(StepUpRequired) as refused:
        POLICY.require(principal(), aal2=True, now=SIGNED_IN)
    assert refused.value.acr_values == "aal2"
    POLICY.require(principal(amr=("hwk", "user"), acr="aal2"), aal2=True, now=SIGNED_IN)


def test_an_api_key_can_never_step_up() -> None:
    caller = principal()
    key = Principal(caller.user, None, api_key=ApiKeyIdentity(uuid.uuid4(), "ak_x", "ci"))
    with pytest.raises(PermissionDenied):
        POLICY.require(key, now=SIGNED_IN)
