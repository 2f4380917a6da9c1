"""Accounts by email: sign-up that reveals nothing, email verification, forgot/reset
password and email change, all mailing through the outbox (``docs/email.md``).

* :mod:`.signup` — :class:`SignUp`: register (202 whatever the address), resend, verify,
  and the login gate of ``AUTHKEEP_EMAIL_VERIFICATION=required``;
* :mod:`.recovery` — :class:`PasswordRecovery`: forgot and reset;
* :mod:`.email_change` — :class:`EmailChange`: request and confirm;
* :mod:`.intents` — mail decided after the response (:class:`AccountMailHandler`, an outbox
  handler), so the open flows cost the same for any address;
* :mod:`.limits` — :class:`MailLimits`, per client IP and per recipient;
* :mod:`.tokens` — :class:`EmailTokens`, issuing and spending single-use links;
* :mod:`.flows` — :class:`EmailFlows`, the three built together.
"""

from authkeep.services.email_flows.config import EmailFlowConfig, VerificationMode
from authkeep.services.email_flows.email_change import EmailChange
from authkeep.services.email_flows.flows import EmailFlows
from authkeep.services.email_flows.intents import ACCOUNT_MAIL, AccountMailHandler, queue_intent
from authkeep.services.email_flows.limits import MailLimits
from authkeep.services.email_flows.recovery import PasswordRecovery
from authkeep.services.email_flows.signup import SignUp
from authkeep.services.email_flows.tokens import EmailTokens, store_token

__all__ = [
    "ACCOUNT_MAIL",
    "AccountMailHandler",
    "EmailChange",
    "EmailFlowConfig",
    "EmailFlows",
    "EmailTokens",
    "MailLimits",
    "PasswordRecovery",
    "SignUp",
    "VerificationMode",
    "queue_intent",
    "store_token",
]
