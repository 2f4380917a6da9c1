"""``authkeep keys generate``: a new private key, readable by its owner only, that signs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from authkeep.cli import app
from authkeep.security.keys import KeyRing


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
def test_keys_generate_makes_a_0600_key_that_signs(tmp_path: Path, alg: str) -> None:
    directory = tmp_path / "keys"
    runner = CliRunner()

    first = runner.invoke(app, ["keys", "generate", "--dir", str(directory), "--alg", alg])
    second = runner.invoke(app, ["keys", "generate", "--dir", str(directory), "--alg", alg])

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    files = sorted(directory.glob("*.pem"))
    assert len(files) == 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    ring = KeyRing.from_directory(directory)
    assert ring.current.algorithm == alg
    # The command names the key it made, and that key is the one that signs now.
    assert f"kid {ring.current.kid}" in second.output
    assert "PRIVATE KEY" not in first.output + second.output


def test_keys_generate_refuses_an_unknown_algorithm(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["keys", "generate", "--dir", str(tmp_path / "k"), "--alg", "HS256"]
    )

    assert result.exit_code != 0
    assert not (tmp_path / "k").exists()
