"""Email templates: jinja2, packaged with authkeep, each overridable from a directory.

Every message ``<name>`` has three files: ``<name>.subject.txt``, ``<name>.txt`` (plain text)
and ``<name>.html`` (which may extend ``_layout.html``). A file of the same name in
``AUTHKEEP_EMAIL_TEMPLATES_DIR`` wins over the packaged one, file by file.

Every template sees ``product_name``, ``public_url`` and ``link(path, **query)``, which
builds an absolute link under ``AUTHKEEP_PUBLIC_URL``. HTML is autoescaped (a user's name or
an organization's name cannot inject markup into a message sent by the product); a variable
the template needs but the context lacks is an error (``StrictUndefined``), never an empty
string in a sent email.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2

TEMPLATE_NAMES = frozenset(
    {
        "verify_email",
        "password_reset",
        "email_change_confirm",
        "email_change_notice",
        "signup_attempt_existing",
        "invitation",
        "password_changed",
        "recovery_code_used",
        "mfa_reset",
        "webhook_disabled",
        "deletion_scheduled",
        "inactivity_warning",
        "account_deleted",
    }
)
"""The messages authkeep sends (each the stem of three template files)."""


class TemplateError(ValueError):
    """A message could not be rendered: unknown name, missing variable, broken template."""


@dataclass(frozen=True, slots=True)
class RenderedMail:
    """A message's three parts, ready to go into an email."""

    subject: str
    text: str
    html: str


def _link(base: str) -> Any:
    def link(path: str, **query: object) -> str:
        if not path.startswith("/") or path.startswith("//"):
            raise TemplateError("link() takes a path that starts with a single '/'")
        url = base + path
        if query:
            url += "?" + urlencode({key: str(value) for key, value in query.items()})
        return url

    return link


class MailTemplates:
    """Renders the messages, override directory first."""

    def __init__(
        self,
        *,
        product_name: str,
        public_url: str,
        override_dir: Path | None = None,
    ) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if override_dir is not None:
            loaders.append(jinja2.FileSystemLoader(override_dir))
        loaders.append(jinja2.PackageLoader("authkeep.services.mail", "templates"))
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            # Only HTML is escaped: the text part and the subject are not markup, and
            # escaping them would show "&amp;" to the reader.
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
        )
        self._env.globals.update(
            product_name=product_name, public_url=public_url, link=_link(public_url)
        )

    def render(self, name: str, context: Mapping[str, Any]) -> RenderedMail:
        """The subject, text and HTML of message ``name`` for ``context``."""
        if name not in TEMPLATE_NAMES:
            raise TemplateError(f"unknown email template {name!r}")
        try:
            subject = self._env.get_template(f"{name}.subject.txt").render(context)
            text = self._env.get_template(f"{name}.txt").render(context)
            html = self._env.get_template(f"{name}.html").render(context)
        except jinja2.TemplateError as exc:
            # The message names the variable or the template, never a context value.
            raise TemplateError(f"email template {name!r}: {type(exc).__name__}: {exc}") from None
        # One line: a header cannot span lines (and a line break could forge another header).
        return RenderedMail(" ".join(subject.split()), text, html)
