"""Account use cases without HTTP: registration rules and credential checks."""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI

from authkeep.db import users as user_rows
from authkeep.errors import AuthkeepError, Conflict, InvalidCredentials, NotFound
from authkeep.services.accounts import FieldError
from authkeep.wiring import Services
from helpers import PASSWORD, authkeep_of


@pytest.fixture
def services(app: FastAPI) -> Services:
    return authkeep_of(app).services


async def test_register_stores_the_normalised_email(services: Services) -> None:
    user = await services.accounts.register(
        email="  Alice.Smith@EXAMPLE.Com ", password=PASSWORD, full_name="Alice"
    )
    assert user.email == "Alice.Smith@example.com"  # trimmed, domain lower-cased
    assert (user.full_name, user.is_active, user.is_superuser) == ("Alice", True, False)
    for variant in ("alice.smith@example.com", "ＡＬＩＣＥ.smith@example.com"):
        with pytest.raises(Conflict, match="Email already registered"):
            await services.accounts.register(email=variant, password=PASSWORD)


async def test_register_names_the_field_that_breaks_a_rule(services: Services) -> None:
    with pytest.raises(FieldError) as bad_email:
        await services.accounts.register(email="nope", password=PASSWORD)
    assert bad_email.value.field == "email"
    with pytest.raises(FieldError) as bad_password:
        await services.accounts.register(email="bob@example.com", password="bob@example.com")
    assert bad_password.value.field == "password"
    assert "bob@example.com" not in bad_password.value.detail


async def test_the_four_credential_failures_raise_one_error(services: Services) -> None:
    accounts = services.accounts
    alice = await accounts.register(email="alice@example.com", password=PASSWORD)
    inactive = await accounts.register(email="inactive@example.com", password=PASSWORD)
    deleted = await accounts.register(email="deleted@example.com", password=PASSWORD)
    await accounts.set_active(inactive.id, False)
    await accounts.soft_delete(deleted.id)

    errors: list[AuthkeepError] = []
    for email, password in (
        ("nobody@example.com", PASSWORD),
        ("alice@example.com", "not " + PASSWORD),
        ("inactive@example.com", PASSWORD),
        ("deleted@example.com", PASSWORD),
    ):
        with pytest.raises(InvalidCredentials) as caught:
            await accounts.check_credentials(email, password)
        errors.append(caught.value)
    assert {(type(e), e.detail, str(e)) for e in errors} == {
        (InvalidCredentials, "Incorrect email or password", "Incorrect email or password")
    }
    assert (await accounts.check_credentials("ALICE@example.com", PASSWORD)).id == alice.id


async def test_soft_delete_keeps_the_row(services: Services) -> None:
    user = await services.accounts.register(email="gone@example.com", password=PASSWORD)
    deleted = await services.accounts.soft_delete(user.id)
    assert deleted.deleted_at is not None
    assert not deleted.is_active
    assert not deleted.can_sign_in
    async with services.db.reading() as conn:
        row = await user_rows.get_by_id(conn, services.envelope, user.id)
    assert row is not None
    assert row.deleted_at == deleted.deleted_at


async def test_status_changes_of_unknown_users_are_not_found(services: Services) -> None:
    with pytest.raises(NotFound):
        await services.accounts.set_active(uuid.uuid4(), False)
    with pytest.raises(NotFound):
        await services.accounts.soft_delete(uuid.uuid4())
