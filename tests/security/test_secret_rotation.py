"""Secret rotation without HTTP: HS256 tokens signed with a previous secret verify until they
expire, new ones use the current secret's kid, a removed secret is refused; keyed hashes
follow the same ring; the asymmetric schedule pre-publishes, switches and retires keys; and
check-config reports each key's id and age, never the key."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import jwt
import pytest
import time_machine
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from authkeep.cli import app
from authkeep.errors import InvalidToken
from authkeep.key_report import key_report_lines
from authkeep.security.email_tokens import EmailTokenKey
from authkeep.security.key_ring import SecretRing, kid_of
from authkeep.security.key_schedule import rotate
from authkeep.security.keys import KeyRing, generate_key
from authkeep.security.tokens import TokenCodec
from authkeep.settings import Settings

OLD = "old-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
NEW = "new-secret-9876543210-ZYXWVUTSRQPONMLKJIHGFEDCBA"


def codec(ring: KeyRing) -> TokenCodec:
    return TokenCodec(
        ring,
        issuer="authkeep",
        audience="authkeep",
        access_ttl=timedelta(minutes=5),
        refresh_ttl=timedelta(days=1),
    )


def test_a_token_of_the_previous_secret_verifies_and_new_ones_use_the_new_kid() -> None:
    before = codec(KeyRing.from_secret(OLD))
    old_access = before.issue_access(user_id="u", email="a@example.com", session_id="s").token
    old_refresh = before.new_refresh(user_id="u", session_id="s").token

    after = codec(KeyRing.from_secret(NEW, [OLD]))
    assert after.decode_access(old_access).user_id == "u"
    assert after.decode_refresh(old_refresh).session_id == "s"
    new_access = after.issue_access(user_id="u", email="a@example.com", session_id="s").token
    assert jwt.get_unverified_header(new_access)["kid"] == kid_of(NEW)
    assert jwt.get_unverified_header(old_access)["kid"] == kid_of(OLD) != kid_of(NEW)

    removed = codec(KeyRing.from_secret(NEW))
    with pytest.raises(InvalidToken):
        removed.decode_access(old_access)
    assert removed.decode_access(new_access).user_id == "u"


def test_a_previous_secret_token_still_expires() -> None:
    issued = datetime.now(UTC) - timedelta(minutes=6)
    old = codec(KeyRing.from_secret(OLD)).issue_access(
        user_id="u", email="a@example.com", session_id="s", now=issued
    )
    with pytest.raises(InvalidToken):
        codec(KeyRing.from_secret(NEW, [OLD])).decode_access(old.token)


def test_the_secret_ring_writes_with_the_newest_and_reads_with_all() -> None:
    ring = SecretRing.from_secrets(NEW, [OLD, NEW])  # a duplicate counts once
    assert [key.kid for key in ring.keys] == [kid_of(NEW), kid_of(OLD)]
    derived = ring.derive(b"purpose/a")
    assert [key.kid for key in derived.keys] == [kid_of(NEW), kid_of(OLD)]
    assert derived.newest.material != NEW.encode()
    assert derived.newest.material != ring.derive(b"purpose/b").newest.material
    old_mac = SecretRing.from_secrets(OLD).derive(b"purpose/a").mac(b"value")
    assert old_mac in derived.macs(b"value")
    assert derived.mac(b"value") == derived.macs(b"value")[0] != old_mac
    assert OLD not in repr(ring)
    assert NEW not in repr(ring)
    assert OLD not in repr(ring.keys)


def test_an_email_token_hashed_before_a_rotation_is_found_after_it() -> None:
    before = EmailTokenKey.from_ring(SecretRing.from_secrets(OLD))
    issued = before.issue()
    after = EmailTokenKey.from_ring(SecretRing.from_secrets(NEW, [OLD]))
    assert issued.hash in after.hashes(issued.token)
    assert after.hash(issued.token) != issued.hash  # new tokens use the new key
    dropped = EmailTokenKey.from_ring(SecretRing.from_secrets(NEW))
    assert issued.hash not in dropped.hashes(issued.token)
    assert after.hashes("not a token") == []


@pytest.mark.parametrize("raw", [f'["{OLD}", "{NEW}0"]', f"{OLD}, {NEW}0"])
def test_previous_secrets_read_as_json_or_comma_separated(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHKEEP_PREVIOUS_SECRET_KEYS", raw)
    settings = Settings(env="test")
    assert [s.get_secret_value() for s in settings.previous_secret_keys] == [OLD, NEW + "0"]


def test_a_weak_previous_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # It would still verify tokens: anybody could forge them with it.
    monkeypatch.setenv("AUTHKEEP_PREVIOUS_SECRET_KEYS", "changeme")
    with pytest.raises(ValidationError, match="AUTHKEEP_PREVIOUS_SECRET_KEYS entry 1"):
        Settings(env="test")


def test_a_pre_published_key_is_in_the_jwks_but_signs_only_from_its_time(tmp_path: Path) -> None:
    old = generate_key(tmp_path, "EdDSA").stem
    start = datetime.now(UTC)
    result = rotate(
        tmp_path,
        max_age=timedelta(days=90),
        prepublish=timedelta(hours=24),
        retire_after=timedelta(days=14),
        force=True,
        now=start,
    )
    assert result.generated is not None
    ring = KeyRing.from_directory(tmp_path)
    assert {jwk["kid"] for jwk in ring.jwks()["keys"]} == {old, result.generated}
    assert ring.current.kid == old
    with time_machine.travel(start + timedelta(hours=24, seconds=1), tick=False):
        assert ring.current.kid == result.generated  # same ring: no restart needed


def test_the_schedule_generates_when_due_and_retires_after_the_longest_lifetime(
    tmp_path: Path,
) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    first = generate_key(tmp_path, "RS256", active_from=start).stem
    plan = {
        "max_age": timedelta(days=90),
        "prepublish": timedelta(days=1),
        "retire_after": timedelta(days=14),
    }
    assert rotate(tmp_path, **plan, now=start + timedelta(days=10)).generated is None
    due = rotate(tmp_path, **plan, now=start + timedelta(days=89))
    assert due.generated is not None
    assert due.retired == []
    assert due.active_from == start + timedelta(days=90)
    # Pending: a second run makes no second key.
    assert rotate(tmp_path, **plan, now=start + timedelta(days=89, hours=1)).generated is None
    kept = rotate(tmp_path, **plan, now=start + timedelta(days=90 + 13))
    assert kept.signing == due.generated
    assert kept.retired == []
    gone = rotate(tmp_path, **plan, now=start + timedelta(days=90 + 14))
    assert gone.retired == [first]
    assert [p.stem for p in tmp_path.glob("*.pem")] == [due.generated]
    assert KeyRing.from_directory(tmp_path).current.algorithm == "RS256"


def test_keys_rotate_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHKEEP_ENV", "test")
    monkeypatch.setenv("AUTHKEEP_JWT_KEYS_DIR", str(tmp_path / "keys"))
    runner = CliRunner()
    first = runner.invoke(app, ["keys", "rotate"])
    assert first.exit_code == 0, first.output
    assert "generated" in first.output
    again = runner.invoke(app, ["keys", "rotate"])
    assert again.exit_code == 0
    assert "nothing due" in again.output
    forced = runner.invoke(app, ["keys", "rotate", "--force"])
    assert "signs from" in forced.output
    assert "restart every worker" in forced.output
    assert len(list((tmp_path / "keys").glob("*.pem"))) == 2
    monkeypatch.delenv("AUTHKEEP_JWT_KEYS_DIR")
    refused = runner.invoke(app, ["keys", "rotate"])
    assert refused.exit_code == 1
    assert "AUTHKEEP_PREVIOUS_SECRET_KEYS" in refused.output


def test_check_config_shows_each_key_id_and_age_and_warns_past_the_maximum(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    old = generate_key(keys, "EdDSA", active_from=datetime.now(UTC) - timedelta(days=120))
    settings = Settings(
        env="test",
        secret_key=SecretStr(NEW),
        secret_key_created_at=date.today() - timedelta(days=10),
        previous_secret_keys=[SecretStr(OLD)],
        jwt_keys_dir=keys,
        key_max_age_days=90,
    )
    text = "\n".join(key_report_lines(settings))
    assert kid_of(NEW) in text
    assert kid_of(OLD) in text
    assert old.stem in text
    assert NEW not in text
    assert OLD not in text
    assert "10 days old" in text
    assert "120 days old" in text
    assert f"WARN    key {old.stem}" in text
    assert f"WARN    key {kid_of(NEW)}" not in text
    os.utime(old, None)  # the age comes from the kid, not the file's time
    assert f"WARN    key {old.stem}" in "\n".join(key_report_lines(settings))


def test_check_config_prints_the_key_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHKEEP_ENV", "test")
    monkeypatch.setenv("AUTHKEEP_SECRET_KEY", NEW)
    monkeypatch.setenv("AUTHKEEP_PREVIOUS_SECRET_KEYS", OLD)
    result = CliRunner().invoke(app, ["check-config"])
    assert f"KEY     {kid_of(NEW)}" in result.output
    assert kid_of(OLD) in result.output
    assert NEW not in result.output
    assert OLD not in result.output
    assert "AUTHKEEP_SECRET_KEY_CREATED_AT" in result.output  # its age is unknown
