"""Access tokens over HTTP: every forged, stale, misdirected or malformed token is a 401.

Each forgery starts from the claims of a real access token and is signed with the app's own
key unless the point is a different key; ``test_the_unmodified_forgery_is_accepted`` proves
the forging itself is right, so every other 401 is due to the one thing changed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from fastapi import FastAPI

from authkeep.db import users as user_rows
from authkeep.security.keys import SigningKey
from helpers import authkeep_of, bearer, login, register

ME = "/api/v1/auth/me"
INVALID = {"detail": "Could not validate credentials"}


def b64(data: bytes) -> str:
    """base64url without padding, as in a JWT."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    """One JSON segment of a hand-built JWT."""
    return b64(json.dumps(value).encode())


class Forge:
    """Tokens built from a real one's claims, signed with the app's key."""

    def __init__(self, key: SigningKey, claims: dict[str, Any]) -> None:
        self.key = key
        self.claims = claims

    def token(
        self,
        *,
        drop: tuple[str, ...] = (),
        headers: dict[str, Any] | None = None,
        secret: bytes | None = None,
        algorithm: str = "HS256",
        **changes: Any,
    ) -> str:
        """Sign the claims with ``changes`` applied and ``drop`` removed."""
        claims = {k: v for k, v in {**self.claims, **changes}.items() if k not in drop}
        return jwt.encode(
            claims,
            secret if secret is not None else self.key.signing_material,
            algorithm=algorithm,
            headers={"kid": self.key.kid, **(headers or {})},
        )

    def by_hand(self, header: Any, digest: Callable[..., Any] = hashlib.sha256) -> str:
        """The real claims under any ``header``, HMAC-signed with the app's key (for headers
        PyJWT refuses to write)."""
        signing_input = f"{segment(header)}.{segment(self.claims)}"
        mac = hmac.new(self.key.signing_material, signing_input.encode(), digest)
        return f"{signing_input}.{b64(mac.digest())}"

    def unsigned(self, header: dict[str, Any], signature: str = "") -> str:
        """A hand-built token with this header, the real claims and ``signature``."""
        return f"{segment(header)}.{segment(self.claims)}.{signature}"


async def setup(client: httpx.AsyncClient, app: FastAPI) -> tuple[dict[str, Any], Forge]:
    """Register and log in; the token pair and a forge for the access token's claims."""
    await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    return pair, Forge(authkeep_of(app).keys.current, claims)


async def rejected(client: httpx.AsyncClient, headers: dict[str, Any]) -> str | None:
    """None if /me answered the contract's 401, else what it did instead."""
    response = await client.get(ME, headers=headers)
    if response.status_code != 401:
        return f"status {response.status_code}"
    if response.headers.get("www-authenticate") != "Bearer":
        return f"WWW-Authenticate {response.headers.get('www-authenticate')!r}"
    if "detail" not in response.json():
        return f"body {response.text}"
    return None


async def test_a_valid_token_works(client: httpx.AsyncClient, app: FastAPI) -> None:
    pair, _ = await setup(client, app)
    response = await client.get(ME, headers=bearer(pair["access_token"]))
    assert response.status_code == 200
    # GET /me is the user of the login, plus the consents still outstanding (none here).
    assert response.json() == {**pair["user"], "consents_outstanding": []}
    assert response.headers["cache-control"] == "no-store"
    # The scheme is case-insensitive (RFC 7235).
    lower = await client.get(ME, headers={"Authorization": f"bearer {pair['access_token']}"})
    assert lower.status_code == 200


async def test_the_unmodified_forgery_is_accepted(client: httpx.AsyncClient, app: FastAPI) -> None:
    _, forge = await setup(client, app)
    assert forge.claims["token_type"] == "access"
    response = await client.get(ME, headers=bearer(forge.token()))
    assert response.status_code == 200
    # A clock skew inside the leeway (10 s) is tolerated.
    skewed = forge.token(exp=int(time.time()) - 2)
    assert (await client.get(ME, headers=bearer(skewed))).status_code == 200
    # A large token under 8 KB is fine: the size rule is what refuses the next one.
    roomy = forge.token(pad="x" * 5000)
    assert 5000 < len(roomy) < 8192
    assert (await client.get(ME, headers=bearer(roomy))).status_code == 200


async def test_forged_and_stale_tokens_are_refused(client: httpx.AsyncClient, app: FastAPI) -> None:
    pair, forge = await setup(client, app)
    now = int(time.time())
    kid = forge.key.kid
    real = pair["access_token"]
    head, body, signature = real.split(".")
    cases: dict[str, str] = {
        "signed with another key": forge.token(secret=b"another-secret-" * 4),
        "expired": forge.token(iat=now - 7200, exp=now - 3600),
        "expired beyond the leeway": forge.token(exp=now - 60),
        "issued in the future": forge.token(iat=now + 3600, exp=now + 7200),
        "not yet valid": forge.token(nbf=now + 3600),
        "exp not a number": forge.token(exp="tomorrow"),
        "wrong audience": forge.token(aud="another-service"),
        "audience list": forge.token(aud=["authkeep", "another-service"]),
        "wrong issuer": forge.token(iss="evil"),
        "issuer prefix": forge.token(iss="authkee"),
        "issuer substring": forge.token(iss="auth"),
        "issuer superstring": forge.token(iss="authkeep-evil"),
        "refresh-typed": pair["refresh_token"],
        "refresh-typed forgery": forge.token(token_type="refresh"),
        "token_type in capitals": forge.token(token_type="ACCESS"),
        "oversized": forge.token(pad="x" * 9000),
        "missing kid": jwt.encode(forge.claims, forge.key.signing_material, algorithm="HS256"),
        "unknown kid": forge.token(headers={"kid": "hs256-000000000000"}),
        "kid not a string": forge.by_hand({"alg": "HS256", "typ": "JWT", "kid": 7}),
        "header not an object": forge.by_hand([1, 2]),
        "HS512 with the right secret": forge.by_hand(
            {"alg": "HS512", "typ": "JWT", "kid": kid}, hashlib.sha512
        ),
        "HS384 with the right secret": forge.by_hand(
            {"alg": "HS384", "typ": "JWT", "kid": kid}, hashlib.sha384
        ),
        "typ not JWT": forge.token(headers={"typ": "at+jwt"}),
        "jku header": forge.token(headers={"jku": "https://evil.example/jwks.json"}),
        "x5u header": forge.token(headers={"x5u": "https://evil.example/cert.pem"}),
        "jwk header": forge.token(
            headers={"jwk": {"kty": "oct", "k": b64(b"another-secret-" * 4)}}
        ),
        "crit header": forge.token(headers={"crit": ["exp"], "exp": now + 60}),
        "unknown user": forge.token(sub=str(uuid.uuid4())),
        "sub not a uuid": forge.token(sub="alice"),
        "sub not a string": forge.token(sub=12345),
        "sid not a uuid": forge.token(sid="session"),
        "payload swapped": f"{head}.{segment({**forge.claims, 'sub': str(uuid.uuid4())})}"
        f".{signature}",
        "signature stripped": f"{head}.{body}.",
        "signature of another token": f"{head}.{body}.{forge.token(jti='x').split('.')[2]}",
        "header not json": f"{b64(b'not json')}.{body}.{signature}",
        "payload not json": jwt.api_jws.encode(
            b"not json", forge.key.signing_material, algorithm="HS256", headers={"kid": kid}
        ),
        "two segments": f"{head}.{body}",
        "four segments": f"{real}.{signature}",
        "garbage": "not-a-token",
        "garbage with dots": "abc.def.ghi",
        "punctuation": "eyJ!.eyJ$.sig%",
        "spaces inside": f"{head}. {body}.{signature}",
        "empty": "",
    }
    for name in ("none", "None", "NONE", "nOnE"):
        for signature_part in ("", signature):
            label = f"alg {name}, signature {'empty' if not signature_part else 'kept'}"
            cases[label] = forge.unsigned({"alg": name, "typ": "JWT", "kid": kid}, signature_part)
    for claim in ("sub", "sid", "jti", "exp", "iat", "iss", "aud", "token_type", "email"):
        cases[f"without {claim}"] = forge.token(drop=(claim,))

    failures = {}
    for name, token in cases.items():
        problem = await rejected(client, bearer(token))
        if problem is not None:
            failures[name] = problem
    assert failures == {}


async def test_credentials_that_are_not_a_bearer_token_are_refused(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    pair, _ = await setup(client, app)
    token = pair["access_token"]
    variants: dict[str, dict[str, Any]] = {
        "no header": {},
        "scheme only": {"Authorization": "Bearer"},
        "scheme and space": {"Authorization": "Bearer "},
        "basic scheme": {"Authorization": f"Basic {token}"},
        "token without scheme": {"Authorization": token},
        "non-ascii bytes": {"Authorization": b"Bearer \xff\xfe\xfd"},
        "control character": {"Authorization": f"Bearer {token[:20]}\x0b{token[20:]}"},
    }
    failures = {}
    for name, headers in variants.items():
        problem = await rejected(client, headers)
        if problem is not None:
            failures[name] = problem
    # A token in the query string is ignored: URLs end up in logs and browser history.
    in_query = await client.get(ME, params={"access_token": token})
    if in_query.status_code != 401:
        failures["query string"] = f"status {in_query.status_code}"
    assert failures == {}
    missing = await client.get(ME)
    assert missing.json() == {"detail": "Not authenticated"}
    bad = await client.get(ME, headers=bearer("not-a-token"))
    assert bad.json() == INVALID


async def test_a_token_stops_working_when_its_user_is_deactivated_or_deleted(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    pair, _ = await setup(client, app)
    token = pair["access_token"]
    user_id = uuid.UUID(pair["user"]["id"])
    services = authkeep_of(app).services

    # Straight in the database, so that no session is revoked: the user check alone refuses.
    # A change made behind the services' back must say so, as they do, for the cached user
    # to be read again (else it applies within authn.CACHE_SECONDS).
    async with services.db.transaction() as conn:
        await user_rows.update_user(conn, user_id, is_active=False)
    await services.revocations.users_changed([str(user_id)])
    assert await rejected(client, bearer(token)) is None
    async with services.db.transaction() as conn:
        await user_rows.update_user(conn, user_id, is_active=True)
    await services.revocations.users_changed([str(user_id)])
    assert (await client.get(ME, headers=bearer(token))).status_code == 200

    await services.accounts.set_active(user_id, False)
    assert await rejected(client, bearer(token)) is None
    await services.accounts.set_active(user_id, True)
    fresh = await login(client)
    assert (await client.get(ME, headers=bearer(fresh["access_token"]))).status_code == 200

    await services.accounts.soft_delete(user_id)
    assert await rejected(client, bearer(fresh["access_token"])) is None
