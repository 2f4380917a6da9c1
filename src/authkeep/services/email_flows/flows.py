"""The email flows of one running authkeep, built together (they share the token key, the
mail limits and the configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from authkeep.db.engine import Database
from authkeep.security.passwords import PasswordHasher
from authkeep.services.accounts import Accounts
from authkeep.services.audit import AuditLog
from authkeep.services.consents import Consents
from authkeep.services.email_flows.config import EmailFlowConfig
from authkeep.services.email_flows.email_change import EmailChange
from authkeep.services.email_flows.limits import MailLimits
from authkeep.services.email_flows.recovery import PasswordRecovery
from authkeep.services.email_flows.signup import SignUp
from authkeep.services.email_flows.tokens import EmailTokens
from authkeep.services.revocation import Publish
from authkeep.settings import Settings

if TYPE_CHECKING:
    # Only a type here: authkeep.services.delivery imports this package (its handler).
    from authkeep.services.delivery import Delivery


@dataclass(frozen=True, slots=True)
class EmailFlows:
    """Sign-up and verification, password recovery, email change."""

    signup: SignUp
    recovery: PasswordRecovery
    email_change: EmailChange

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        hasher: PasswordHasher,
        accounts: Accounts,
        delivery: Delivery,
        tokens: EmailTokens,
        limits: MailLimits,
        audit: AuditLog,
        *,
        publish: Publish,
        users_changed: Publish,
        consents: Consents | None = None,
    ) -> EmailFlows:
        """The three flows as ``settings`` configure them; ``consents`` are what sign-up
        records (None: no consent purpose)."""
        config = EmailFlowConfig.from_settings(settings)
        return cls(
            signup=SignUp(
                db,
                hasher,
                accounts,
                delivery.outbox,
                tokens,
                limits,
                audit,
                config,
                users_changed=users_changed,
                consents=consents,
            ),
            recovery=PasswordRecovery(
                db,
                hasher,
                accounts,
                delivery.outbox,
                delivery.mailer,
                tokens,
                limits,
                audit,
                publish=publish,
                users_changed=users_changed,
            ),
            email_change=EmailChange(
                db,
                hasher,
                delivery.mailer,
                tokens,
                limits,
                audit,
                config,
                users_changed=users_changed,
            ),
        )
