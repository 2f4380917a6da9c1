"""The envelope (``security/envelope.py``): user keys wrapped by the data-key ring, values
sealed with them and bound to their row, the keyed blind index, and rotation."""

from __future__ import annotations

import uuid

import pytest

from authkeep.security.data_keys import SealedValueError, SecretBox
from authkeep.security.envelope import Envelope, field_context
from helpers import TEST_DATA_KEY

OLD = TEST_DATA_KEY  # kid "test-dk"
NEW = "test-dk2:" + "B" * 43
OTHER = "other:" + "C" * 43


def envelope(*entries: str, cache_size: int = 10_000) -> Envelope:
    return Envelope(SecretBox.from_entries(entries or (OLD,)), cache_size=cache_size)


def test_a_user_key_wraps_and_unwraps_for_its_account_only() -> None:
    box = envelope()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    key = box.new_user_key()
    wrapped = box.wrap(alice, key)
    assert key.hex() not in wrapped
    assert box.unwrap(alice, wrapped) == key
    # A wrapped key copied to another account's row does not open there.
    with pytest.raises(SealedValueError):
        box.unwrap(bob, wrapped)
    # Nor with another ring.
    with pytest.raises(SealedValueError):
        envelope(OTHER).unwrap(alice, wrapped)


def test_a_sealed_value_opens_only_with_its_key_and_in_its_context() -> None:
    box = envelope()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    alices = box.remember(alice, box.new_user_key())
    bobs = box.remember(bob, box.new_user_key())
    here = field_context("users", "email", alice)
    sealed = box.seal_with(alices, "alice@example.com", context=here)
    assert sealed.startswith("uk1.")
    assert "alice" not in sealed
    assert box.open_with(alices, sealed, context=here) == "alice@example.com"
    # Random nonces: the same value seals differently each time (no equality oracle).
    assert box.seal_with(alices, "alice@example.com", context=here) != sealed
    for aead, context in (
        (alices, field_context("users", "email", bob)),  # copied into Bob's row
        (alices, field_context("users", "full_name", alice)),  # into another column
        (bobs, field_context("users", "email", alice)),  # another account's key
    ):
        with pytest.raises(SealedValueError):
            box.open_with(aead, sealed, context=context)
    for damaged in (sealed[:-2] + "AA", "uk1.", "uk1.!!!", "alice@example.com"):
        with pytest.raises(SealedValueError):
            box.open_with(alices, damaged, context=here)


def test_values_of_no_account_are_sealed_with_the_master_ring() -> None:
    box = envelope()
    here = field_context("invitations", "email", uuid.uuid4())
    sealed = box.seal("invitee@example.com", context=here)
    assert sealed.startswith("test-dk.")
    assert not box.is_user_sealed(sealed)
    assert box.open(sealed, context=here) == "invitee@example.com"
    with pytest.raises(SealedValueError):
        box.open(sealed, context=field_context("invitations", "email", uuid.uuid4()))


def test_the_blind_index_is_keyed_deterministic_and_versioned() -> None:
    box = envelope()
    index = box.blind_index("alice@example.com")
    assert index == box.blind_index("alice@example.com")
    assert index.startswith("bi.test-dk.")
    assert "alice" not in index
    assert box.blind_index("bob@example.com") != index
    # Without the data key nobody can compute it (a dictionary of addresses is no help).
    assert envelope(OTHER).blind_index("alice@example.com").split(".")[2] != index.split(".")[2]
    assert box.index_is_current(index)


def test_a_ring_with_a_new_key_still_finds_what_the_old_key_indexed_and_sealed() -> None:
    before = envelope(OLD)
    user = uuid.uuid4()
    key = before.new_user_key()
    wrapped = before.wrap(user, key)
    old_index = before.blind_index("alice@example.com")
    master = before.seal("x", context=b"c")

    after = envelope(NEW, OLD)
    # Writes use the new key, look-ups match every key's index (newest first).
    new_index = after.blind_index("alice@example.com")
    assert new_index.startswith("bi.test-dk2.")
    assert after.blind_indexes("alice@example.com") == (new_index, old_index)
    assert not after.index_is_current(old_index)
    # What the old key wrapped and sealed still opens, and is known to need re-wrapping.
    assert after.unwrap(user, wrapped) == key
    assert after.needs_rewrap(wrapped)
    assert not after.needs_rewrap(after.wrap(user, key))
    assert after.open(master, context=b"c") == "x"
    # Once the old key has left the ring, its index no longer matches anything.
    assert old_index not in envelope(NEW).blind_indexes("alice@example.com")


def test_unwrapped_keys_are_remembered_in_a_bounded_map() -> None:
    box = envelope(cache_size=2)
    users = [uuid.uuid4() for _ in range(3)]
    wrapped = {user: box.wrap(user, box.new_user_key()) for user in users}
    ciphers = [box.cipher_for(user, wrapped[user]) for user in users]
    # The least recently used one was dropped; the others are the same objects.
    assert box.remembered(users[0]) is None
    assert box.remembered(users[2]) is ciphers[2]
    assert box.cipher_for(users[1], "not even a wrapped key") is ciphers[1]
    box.forget(users[1])
    assert box.remembered(users[1]) is None
    with pytest.raises(SealedValueError):
        box.cipher_for(users[1], "not even a wrapped key")
