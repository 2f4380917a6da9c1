"""Multi-factor authentication: TOTP factors, recovery codes and the second step of a login
(``docs/mfa.md``). Passkeys plug into the same second step
(:meth:`~authkeep.services.mfa.login.MfaLogins.finish`).

* :mod:`.totp` — :class:`TotpFactors`: setup, confirmation, removal, the replay-safe check;
* :mod:`.recovery` — :class:`RecoveryCodes`: issue, regenerate, spend (audited, emailed);
* :mod:`.login` — :class:`MfaLogins`: the ``mfa_token`` a login with MFA returns, and its
  completion;
* :mod:`.limits` — :class:`MfaLimits`: ``AUTHKEEP_MFA_RATE_LIMIT`` per user and client IP.
"""

from authkeep.services.mfa.limits import MfaLimits
from authkeep.services.mfa.login import MfaLogins, MfaPending, Verify
from authkeep.services.mfa.recovery import RecoveryCodes
from authkeep.services.mfa.totp import TotpFactors, TotpSetup

__all__ = [
    "MfaLimits",
    "MfaLogins",
    "MfaPending",
    "RecoveryCodes",
    "TotpFactors",
    "TotpSetup",
    "Verify",
]
