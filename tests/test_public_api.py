"""The public API: what an embedding app may import from ``authkeep``."""

from __future__ import annotations

import authkeep


def test_all_is_sorted_and_unique() -> None:
    assert authkeep.__all__ == sorted(authkeep.__all__)
    assert len(set(authkeep.__all__)) == len(authkeep.__all__)


def test_every_public_name_imports() -> None:
    for name in authkeep.__all__:
        assert getattr(authkeep, name) is not None, name


def test_the_embedding_essentials_are_public() -> None:
    for name in ("Authkeep", "Settings", "CurrentUser", "current_user", "create_app"):
        assert name in authkeep.__all__


def test_every_public_error_derives_from_the_root() -> None:
    errors = [
        getattr(authkeep, name)
        for name in authkeep.__all__
        if isinstance(getattr(authkeep, name), type)
        and issubclass(getattr(authkeep, name), Exception)
    ]
    assert authkeep.InvalidCredentials in errors
    assert all(issubclass(error, authkeep.AuthkeepError) for error in errors)


def test_what_the_docs_and_examples_import_is_public() -> None:
    # docs/embedding.md and examples/ protect routes with these aliases and serve the docs
    # offline with install_docs: none of them may need a private module path.
    for name in ("OrgAdmin", "OrgEditor", "OrgViewer", "install_docs", "require_role"):
        assert name in authkeep.__all__, name
