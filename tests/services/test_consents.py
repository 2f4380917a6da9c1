"""Consent rules without HTTP: what a sign-up must send (pure), concurrent identical grants
recorded once, and ``require`` failing loudly for a purpose nobody configured."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from audit_helpers import rows
from authkeep import ConsentRequired, Settings, create_app
from authkeep.services.accounts import FieldError
from authkeep.services.consents import ConsentPolicy
from authkeep.settings import ConsentPurpose
from helpers import PASSWORD, authkeep_of, running

POLICY = ConsentPolicy(
    {
        "terms": ConsentPurpose(version="2026-11", required=True),
        "privacy": ConsentPurpose(version="3", required=True),
        "marketing": ConsentPurpose(version="1"),
    }
)


def test_a_sign_up_sends_every_required_purpose_at_its_current_version() -> None:
    both = {"terms": "2026-11", "privacy": "3"}
    assert POLICY.signup_grants(both) == both
    assert POLICY.signup_grants({**both, "marketing": "1"}) == {**both, "marketing": "1"}
    assert ConsentPolicy().signup_grants(None) == {}
    assert ConsentPolicy().signup_grants({}) == {}


@pytest.mark.parametrize(
    ("consents", "says"),
    [
        (None, "Registering needs consent to 'terms' version '2026-11', 'privacy' version '3'"),
        ({"terms": "2026-11"}, "Registering needs consent to 'privacy' version '3'; send"),
        ({"terms": "my password 123", "privacy": "3"}, "The current version of 'terms'"),
        ({"terms": "2026-11", "privacy": "3", "secret-sauce": "1"}, "Unknown consent purpose"),
    ],
)
def test_what_a_sign_up_lacks_is_said_without_repeating_it(
    consents: dict[str, str] | None, says: str
) -> None:
    with pytest.raises(FieldError) as caught:
        POLICY.signup_grants(consents)
    assert caught.value.field == "consents"
    assert says in caught.value.detail
    assert "my password" not in caught.value.detail
    assert "secret-sauce" not in caught.value.detail


async def test_a_grant_repeated_concurrently_is_stored_and_audited_once(
    make_settings: Callable[..., Settings],
) -> None:
    purposes = {"marketing": {"version": "1"}}
    async with running(create_app(make_settings(consent_purposes=purposes))) as app:
        services = authkeep_of(app).services
        user = await services.accounts.register(email="alice@example.com", password=PASSWORD)
        states = await asyncio.gather(
            *(
                services.consents.decide(user.id, "marketing", granted=True, version="1")
                for _ in range(6)
            )
        )
        assert {(s.granted, s.granted_version) for s in states} == {(True, "1")}
        assert len(await rows(services.db, "consent.granted")) == 1
        await services.consents.require(user.id, "marketing")  # granted: no error
        await services.consents.decide(user.id, "marketing", granted=False, version="1")
        with pytest.raises(ConsentRequired) as refused:
            await services.consents.require(user.id, "marketing")
        assert (refused.value.purpose, refused.value.version) == ("marketing", "1")


async def test_requiring_a_purpose_nobody_configured_fails_loudly(
    make_settings: Callable[..., Settings],
) -> None:
    # A typo in an embedding app must neither open the route nor pass as the user's refusal.
    async with running(create_app(make_settings())) as app:
        services = authkeep_of(app).services
        user = await services.accounts.register(email="alice@example.com", password=PASSWORD)
        with pytest.raises(LookupError, match="no such purpose in AUTHKEEP_CONSENT_PURPOSES"):
            await services.consents.require(user.id, "terms")
