"""Data keys: sealing stored secrets with AES-256-GCM under a key ring, bound to their row."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from authkeep.cli import app
from authkeep.security.data_keys import (
    SealedValueError,
    SecretBox,
    new_data_key_entry,
    parse_data_key,
)
from authkeep.settings import DATA_KEY_ENTRY, Settings, find_problems, load_or_create_dev_data_key

SECRET = b"JBSWY3DPEHPK3PXP"


def context(row: uuid.UUID) -> bytes:
    return b"mfa_totp.secret_sealed:" + row.bytes


def test_a_sealed_value_opens_in_its_context_and_names_its_key() -> None:
    box = SecretBox.from_entries([new_data_key_entry("k2"), new_data_key_entry("k1")])
    row = uuid.uuid4()
    sealed = box.seal(SECRET, context=context(row))
    assert sealed.startswith("k2.")
    assert SECRET not in sealed.encode()
    assert box.open(sealed, context=context(row)) == SECRET
    # A fresh nonce every time: equal secrets do not give equal ciphertexts.
    assert box.seal(SECRET, context=context(row)) != sealed


def test_a_value_copied_to_another_row_does_not_open() -> None:
    box = SecretBox.from_entries([new_data_key_entry()])
    sealed = box.seal(SECRET, context=context(uuid.uuid4()))
    with pytest.raises(SealedValueError):
        box.open(sealed, context=context(uuid.uuid4()))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1],  # ciphertext/tag edited
        lambda s: "unknown." + s.partition(".")[2],  # another key's id
        lambda s: s.partition(".")[0] + ".",  # no body
        lambda s: s.partition(".")[0] + ".%%%%",  # not base64url
        lambda s: s.partition(".")[0] + ".AAAA",  # too short for nonce and tag
        lambda _s: "not sealed at all",
    ],
)
def test_a_tampered_or_foreign_value_is_one_error(tamper: object) -> None:
    box = SecretBox.from_entries([new_data_key_entry("k1")])
    row = uuid.uuid4()
    sealed = box.seal(SECRET, context=context(row))
    with pytest.raises(SealedValueError):
        box.open(tamper(sealed), context=context(row))  # type: ignore[operator]


def test_rotation_old_values_open_new_ones_use_the_newest_key() -> None:
    old_entry = new_data_key_entry("old")
    row = uuid.uuid4()
    sealed_before = SecretBox.from_entries([old_entry]).seal(SECRET, context=context(row))
    rotated = SecretBox.from_entries([new_data_key_entry("new"), old_entry])
    assert rotated.open(sealed_before, context=context(row)) == SECRET
    assert rotated.needs_resealing(sealed_before)
    resealed = rotated.seal(SECRET, context=context(row))
    assert not rotated.needs_resealing(resealed)
    # Dropping the old key too early is loud, not silent garbage.
    with pytest.raises(SealedValueError):
        SecretBox.from_entries([new_data_key_entry("new")]).open(
            sealed_before, context=context(row)
        )


@pytest.mark.parametrize(
    "entry",
    ["no-separator", "bad id!:" + "A" * 43, "k1:" + "A" * 42, "k1:" + "A" * 44, "k1:!!!!"],
)
def test_malformed_entries_are_refused_without_echoing_the_key(entry: str) -> None:
    with pytest.raises(ValueError, match="data key") as caught:
        parse_data_key(entry)
    assert "A" * 40 not in str(caught.value)
    assert not DATA_KEY_ENTRY.match(entry)


def test_repr_hides_the_key_material() -> None:
    entry = new_data_key_entry("k1")
    assert entry.partition(":")[2] not in repr(SecretBox.from_entries([entry]))


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_settings_report_missing_malformed_and_duplicate_keys() -> None:
    missing = [p for p in find_problems(_settings()) if p.setting == "AUTHKEEP_DATA_KEYS"]
    assert [p.level for p in missing] == ["production"]
    entry = new_data_key_entry("k1")
    assert not [
        p for p in find_problems(_settings(data_keys=[entry])) if p.setting == "AUTHKEEP_DATA_KEYS"
    ]
    with pytest.raises(ValueError, match="entry 1 is not"):
        _settings(data_keys=["k1:short"])
    with pytest.raises(ValueError, match="twice"):
        _settings(data_keys=[entry, new_data_key_entry("k1")])


def test_production_refuses_to_start_without_data_keys() -> None:
    with pytest.raises(ValueError, match="AUTHKEEP_DATA_KEYS"):
        _settings(
            env="production",
            secret_key="pZ4-qL9_vX2mK7rT5wY8nB3cF6hJ1dG0sA",
            trusted_hosts=["api.example.com"],
            email_backend="smtp",
            public_url="https://app.example.com",
        )


def test_the_development_key_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / ".authkeep-data-keys"
    entry, created = load_or_create_dev_data_key(path)
    assert created
    assert DATA_KEY_ENTRY.match(entry)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_dev_data_key(path) == (entry, False)


def _dev_key_when_released(path: Path, start: Any, results: Any) -> None:
    start.wait()
    results.put(load_or_create_dev_data_key(path)[0])


def test_workers_starting_at_once_share_one_development_key(tmp_path: Path) -> None:
    # `authkeep serve --workers 4` on a fresh checkout: each worker process makes its key at
    # start-up. Each with its own, an account made by one would be unknown to the others
    # (its email sealed and indexed under another key).
    path = tmp_path / ".authkeep-data-keys"
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(target=_dev_key_when_released, args=(path, start, results))
        for _ in range(6)
    ]
    for worker in workers:
        worker.start()
    start.set()
    keys = {results.get(timeout=30) for _ in workers}
    for worker in workers:
        worker.join(timeout=30)
    assert keys == {path.read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no staged file left behind


def test_an_invalid_development_key_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / ".authkeep-data-keys"
    path.write_text("not a key\n")
    entry, created = load_or_create_dev_data_key(path)
    assert created
    assert path.read_text().strip() == entry
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_command_prints_a_usable_entry() -> None:
    result = CliRunner().invoke(app, ["keys", "data-key", "--id", "k7"])
    assert result.exit_code == 0, result.output
    entry = result.output.strip()
    assert entry.startswith("k7:")
    box = SecretBox.from_entries([entry])
    assert box.open(box.seal(SECRET, context=b"x"), context=b"x") == SECRET
    refused = CliRunner().invoke(app, ["keys", "data-key", "--id", "not valid"])
    assert refused.exit_code == 1
