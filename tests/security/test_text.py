"""The character rules of :mod:`authkeep.security.text`, for any string and every category."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authkeep.security.text import TextRejected, check_text, clean_display_name, clip


@pytest.mark.parametrize("value", ["\x00", "a\x1fb", "\x7f", "\x9b", "a\ud800"])
def test_check_text_refuses_controls_and_lone_surrogates(value: str) -> None:
    with pytest.raises(TextRejected) as caught:
        check_text(value)
    assert "U+" in str(caught.value)


@given(st.text())
def test_a_display_name_is_refused_or_has_no_hidden_characters(value: str) -> None:
    try:
        name = clean_display_name(value, max_length=100)
    except TextRejected:
        return
    assert 1 <= len(name) <= 100
    assert name == unicodedata.normalize("NFC", name).strip()
    for ch in name:
        category = unicodedata.category(ch)
        assert category not in {"Cc", "Cs", "Zl", "Zp"}
        assert category != "Cf" or ch in "\u200c\u200d"


@given(st.text(), st.integers(min_value=0, max_value=300))
def test_clip_always_fits_and_keeps_no_control_character(value: str, length: int) -> None:
    clipped = clip(value, length)
    assert clipped is not None
    assert len(clipped) <= length
    assert all(unicodedata.category(ch) not in {"Cc", "Cs"} for ch in clipped)
    clipped.encode("utf-8")  # storable


def test_clip_keeps_none() -> None:
    assert clip(None, 10) is None
