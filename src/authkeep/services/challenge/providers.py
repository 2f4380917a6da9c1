"""Who poses the challenge: ALTCHA proof of work (default, no third party) or a CAPTCHA
service verified server-side (Cloudflare Turnstile, hCaptcha, reCAPTCHA).

Each provider gives clients a public description of the challenge (:meth:`public`) and turns
a submitted solution into a :class:`Solved` (an id to spend once, and until when) or None.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
import structlog

from authkeep.errors import DependencyUnavailable
from authkeep.security.proof_of_work import ProofOfWork

log = structlog.get_logger("authkeep.challenge")

ProviderName = Literal["altcha", "turnstile", "hcaptcha", "recaptcha"]

VERIFY_URLS: dict[ProviderName, str] = {
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
    "hcaptcha": "https://api.hcaptcha.com/siteverify",
    "recaptcha": "https://www.google.com/recaptcha/api/siteverify",
}
VERIFIER_UNAVAILABLE = "Login temporarily unavailable: challenge verifier unreachable"
_VERIFY_TIMEOUT = 5.0
# How long a CAPTCHA token is remembered as spent: the services' own token lifetime
# (Turnstile and reCAPTCHA: 300 s, hCaptcha: 120 s).
_TOKEN_LIFETIME = 300


@dataclass(frozen=True, slots=True)
class Solved:
    """An accepted solution: what to spend, and until when it could be replayed."""

    solution_id: str
    expires_at: int


class ChallengeProvider(Protocol):
    """A source of challenges."""

    name: ProviderName

    def public(self) -> dict[str, Any]:
        """What a client needs to render and solve the challenge (no secret)."""
        ...

    async def verify(self, solution: str, ip: str | None) -> Solved | None:
        """The accepted solution, or None when ``solution`` is wrong, forged or expired."""
        ...

    async def close(self) -> None:
        """Release what the provider holds."""
        ...


class AltchaProvider:
    """ALTCHA proof of work: the client pays CPU; verifying costs one hash and one HMAC."""

    name: ProviderName = "altcha"

    def __init__(self, pow_: ProofOfWork) -> None:
        self._pow = pow_

    def public(self) -> dict[str, Any]:
        """A fresh ALTCHA challenge (the widget's ``challengeurl`` answer) and its
        provider's name."""
        return {"provider": self.name, **self._pow.issue()}

    async def verify(self, solution: str, ip: str | None) -> Solved | None:
        """See :meth:`ChallengeProvider.verify`."""
        solved = self._pow.verify(solution)
        if solved is None:
            return None
        return Solved("altcha:" + solved.challenge_id, solved.expires_at)

    async def close(self) -> None:
        """Nothing to release."""


class SiteVerifyProvider:
    """Turnstile, hCaptcha or reCAPTCHA: the token is checked by the service's siteverify
    endpoint (one form POST: ``secret``, ``response``, ``remoteip``; answer ``success``)."""

    def __init__(
        self,
        name: ProviderName,
        *,
        secret: str,
        site_key: str | None,
        verify_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._secret = secret
        self._site_key = site_key
        self._url = verify_url
        self._client = httpx.AsyncClient(
            timeout=_VERIFY_TIMEOUT, transport=transport, follow_redirects=False
        )

    def public(self) -> dict[str, Any]:
        """The provider and the site key the widget is rendered with."""
        return {"provider": self.name, "site_key": self._site_key}

    async def verify(self, solution: str, ip: str | None) -> Solved | None:
        """See :meth:`ChallengeProvider.verify`. The service's own single-use check stands;
        the token is also spent locally, so a replay is refused even by a lax service."""
        form = {"secret": self._secret, "response": solution}
        if ip is not None:
            form["remoteip"] = ip
        try:
            response = await self._client.post(self._url, data=form)
            answer = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            log.warning(
                "challenge_verifier_unavailable", provider=self.name, error=type(exc).__name__
            )
            raise DependencyUnavailable(VERIFIER_UNAVAILABLE) from None
        if not isinstance(answer, dict):
            log.warning(
                "challenge_verifier_unavailable", provider=self.name, status=response.status_code
            )
            raise DependencyUnavailable(VERIFIER_UNAVAILABLE)
        if answer.get("success") is not True:
            log.info("challenge_refused", provider=self.name, codes=answer.get("error-codes"))
            return None
        digest = hashlib.sha256(solution.encode()).hexdigest()
        return Solved(f"{self.name}:{digest}", int(time.time()) + _TOKEN_LIFETIME)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
