"""Signing secrets: generated, sealed at rest, and used the Standard Webhooks way.

* A secret is ``whsec_`` + base64 of 32 random bytes (the spec's format, which every
  Standard Webhooks library reads). It is shown once, when made; the database keeps it
  sealed with a data key (AES-256-GCM, ``authkeep.security.data_keys``), bound to its
  endpoint and column, so a stolen dump yields no secret and a sealed value copied to
  another endpoint does not open there.
* A message is signed with ``standardwebhooks`` (HMAC-SHA256 over ``id.timestamp.body``):
  ``webhook-signature: v1,<base64>``. During a rotation the previous secret signs too, so
  the header holds both signatures (space-separated) until the previous one expires and a
  receiver can switch secrets at its own pace.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook

from authkeep.security.data_keys import SecretBox

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A new signing secret (``whsec_…``)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sealing_context(column: str, endpoint_id: uuid.UUID) -> bytes:
    """The associated data an endpoint's secret column is sealed with: column and row."""
    return f"webhook_endpoints.{column}:".encode() + endpoint_id.bytes


def seal(box: SecretBox, secret: str, endpoint_id: uuid.UUID, *, previous: bool = False) -> str:
    """``secret`` sealed for one endpoint's current (or previous) secret column."""
    column = "previous_secret" if previous else "secret"
    return box.seal(secret.encode(), context=sealing_context(column, endpoint_id))


def open_sealed(
    box: SecretBox, sealed: str, endpoint_id: uuid.UUID, *, previous: bool = False
) -> str:
    """The secret sealed by :func:`seal` (SealedValueError if it does not open there)."""
    column = "previous_secret" if previous else "secret"
    return box.open(sealed, context=sealing_context(column, endpoint_id)).decode()


def signature_header(
    signing_secrets: Sequence[str], message_id: str, moment: datetime, body: str
) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per secret, newest first."""
    return " ".join(Webhook(secret).sign(message_id, moment, body) for secret in signing_secrets)
