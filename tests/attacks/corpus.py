"""The attack corpus: every JWT and HTTP attack authkeep must refuse, black box over HTTP.

Each attack is an async function taking a :class:`Target` (an HTTP client pointed at a running
authkeep, plus one registered user's fresh tokens) and returning the responses it provoked.
The tests run the corpus in-process (``test_attacks.py``) and over real HTTP against four
``authkeep serve`` workers on PostgreSQL + Redis (``tests/deploy/test_four_workers.py``).
Every response must be 400/401/403/404/422 — never a 2xx, never a 500 — and must not echo
the token or password it carried.

Sources: the JWT attacks of PortSwigger's Web Security Academy and ticarpi/jwt_tool's attack
list (alg none, stripped signature, key confusion, jwk/jku/x5u injection, kid traversal and
injection, claim tampering), OWASP's API Security Top 10 (mass assignment), and OWASP's
header-spoofing notes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.server
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authkeep import Settings
from authkeep.security.keys import KeyRing, load_private_key
from forgery import attacker_rsa
from helpers import PASSWORD, login, register

ME = "/api/v1/auth/me"
REFRESH = "/api/v1/auth/refresh"
ACCEPTED = frozenset({400, 401, 403, 404, 405, 413, 422})


@dataclass
class Target:
    """What an attacker holds: a client, a user's own credentials and valid tokens.

    ``sign`` re-signs claims with the server's real key: it stands for an insider or a leaked
    key only where the attack is about claim validation (an expired but correctly signed
    token must still be refused), never about the signature.
    """

    http: httpx.AsyncClient
    email: str
    password: str
    access_token: str
    refresh_token: str
    sign: Callable[[dict[str, Any], dict[str, Any]], str]
    public_keys: list[dict[str, Any]] = field(default_factory=list)

    @property
    def claims(self) -> dict[str, Any]:
        """The access token's payload, unverified (an attacker can read it)."""
        return dict(jwt.decode(self.access_token, options={"verify_signature": False}))

    @property
    def header(self) -> dict[str, Any]:
        """The access token's JOSE header."""
        return dict(jwt.get_unverified_header(self.access_token))


def b64(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT assembled by hand (no library in the way of malformed input)."""
    head = b64(json.dumps(header, separators=(",", ":")).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{b64(signature)}"


def hs256(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """A JWT HMAC-SHA256-signed with ``key``, whatever the header says."""
    head, body, _ = raw_token(header, claims).split(".")
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


async def me(target: Target, token: str) -> httpx.Response:
    """Call the protected route with ``token``."""
    return await target.http.get(ME, headers={"Authorization": f"Bearer {token}"})


Attack = Callable[[Target], Awaitable[list[httpx.Response]]]
ATTACKS: dict[str, Attack] = {}


def attack(fn: Attack) -> Attack:
    """Register an attack under its function name."""
    ATTACKS[fn.__name__] = fn
    return fn


# --- signature and algorithm attacks -------------------------------------------------------


@attack
async def alg_none_any_case(t: Target) -> list[httpx.Response]:
    """``alg: none`` (and nOnE, NONE, ...) with the signature removed or kept."""
    out = []
    for alg in ("none", "None", "NONE", "nOnE"):
        header = {**t.header, "alg": alg}
        out.append(await me(t, raw_token(header, t.claims)))
        out.append(await me(t, raw_token(header, t.claims) + t.access_token.split(".")[2]))
    return out


@attack
async def empty_signature(t: Target) -> list[httpx.Response]:
    """The real header and payload with an empty signature."""
    head, body, _sig = t.access_token.split(".")
    return [await me(t, f"{head}.{body}.")]


@attack
async def stripped_signature(t: Target) -> list[httpx.Response]:
    """Only two segments, or a signature of another token."""
    head, body, _sig = t.access_token.split(".")
    other_sig = t.refresh_token.split(".")[2]
    return [await me(t, f"{head}.{body}"), await me(t, f"{head}.{body}.{other_sig}")]


@attack
async def tampered_payload(t: Target) -> list[httpx.Response]:
    """A payload edited to another user (and admin), original signature kept."""
    head, _body, sig = t.access_token.split(".")
    claims = {**t.claims, "sub": str(uuid.uuid4()), "is_superuser": True, "role": "admin"}
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    return [await me(t, f"{head}.{body}.{sig}")]


@attack
async def hs256_with_common_secrets(t: Target) -> list[httpx.Response]:
    """HS256 signed with an empty or well-known secret, under our kid and without one."""
    out = []
    for secret in ("", "secret", "changeme", "your-256-bit-secret", "authkeep", "key"):
        for header in ({**t.header, "alg": "HS256"}, {"alg": "HS256", "typ": "JWT"}):
            out.append(await me(t, hs256(header, t.claims, secret.encode())))
    return out


def _public_encodings(t: Target) -> Iterator[tuple[str, bytes]]:
    for jwk in t.public_keys:
        key = jwt.PyJWK(jwk).key
        yield (
            "pem",
            key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        yield (
            "pem-pkcs1" if jwk.get("kty") == "RSA" else "pem-raw",
            (
                key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
                if jwk.get("kty") == "RSA"
                else key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            ),
        )
        yield (
            "der",
            key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        yield "jwk", json.dumps(jwk).encode()
        yield "jwk-sorted", json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()


@attack
async def hs256_signed_with_public_key(t: Target) -> list[httpx.Response]:
    """Key confusion: HS256 "signed" with the server's public key (PEM, DER, JWK) under the
    asymmetric key's kid — a verifier that lets the token pick its algorithm accepts it."""
    out = []
    for jwk in t.public_keys:
        header = {"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}
        for _name, material in _public_encodings(t):
            out.append(await me(t, hs256(header, t.claims, material)))
    if not t.public_keys:
        # HS256 deployments publish no key: the attack degenerates to an unknown-key forgery.
        out.append(await me(t, raw_token({"alg": "HS256", "kid": "x"}, t.claims, b"x" * 32)))
    return out


@attack
async def alg_swapped_on_kid(t: Target) -> list[httpx.Response]:
    """The real kid with another algorithm (RS256 on an EdDSA kid, ES256, HS512...)."""
    out = []
    for alg in ("RS256", "EdDSA", "ES256", "HS512", "PS256", "HS256"):
        if alg == t.header.get("alg"):
            continue
        out.append(await me(t, raw_token({**t.header, "alg": alg}, t.claims, b"\x00" * 64)))
    return out


@attack
async def embedded_jwk(t: Target) -> list[httpx.Response]:
    """The attacker's own public key embedded in the header (``jwk``), token signed with it."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    token = jwt.encode(
        t.claims, private, algorithm="RS256", headers={"jwk": jwk, "kid": "attacker"}
    )
    token2 = jwt.encode(
        t.claims, private, algorithm="RS256", headers={"jwk": jwk, "kid": t.header.get("kid")}
    )
    return [await me(t, token), await me(t, token2)]


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"keys": []}')

    def log_message(self, *_args: Any) -> None:
        pass


@contextlib.contextmanager
def recording_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that records every request it receives."""
    hits: list[str] = []
    handler = type("Recorder", (_Recorder,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


@attack
async def jku_and_x5u_injection(t: Target) -> list[httpx.Response]:
    """``jku``/``x5u`` pointing at an attacker's server: refused, and never fetched."""
    private = ec.generate_private_key(ec.SECP256R1())
    out = []
    with recording_server() as (url, hits):
        for name in ("jku", "x5u"):
            for kid in ("attacker", t.header.get("kid")):
                token = jwt.encode(
                    t.claims,
                    private,
                    algorithm="ES256",
                    headers={name: f"{url}/{name}.json", "kid": kid},
                )
                out.append(await me(t, token))
            # The real signature with an injected header field must not pass either.
            out.append(await me(t, t.sign(t.claims, {name: f"{url}/{name}.json"})))
        time.sleep(0.2)
        assert hits == [], f"the server fetched attacker URLs: {hits}"
    return out


@attack
async def kid_path_traversal(t: Target) -> list[httpx.Response]:
    """``kid`` naming a file whose content is known (empty): ``/dev/null`` and traversal."""
    kids = ("../../../../../../dev/null", "/dev/null", "../../.authkeep-secret", "..\\..\\x")
    return [
        await me(t, hs256({"alg": "HS256", "typ": "JWT", "kid": k}, t.claims, b"")) for k in kids
    ]


@attack
async def kid_sql_injection(t: Target) -> list[httpx.Response]:
    """``kid`` carrying SQL that would make a key lookup return a known key."""
    kids = ("' UNION SELECT 'secret' -- ", "x' OR '1'='1", "1; DROP TABLE users; --")
    header = {"alg": "HS256", "typ": "JWT"}
    return [await me(t, hs256({**header, "kid": k}, t.claims, b"secret")) for k in kids]


@attack
async def unknown_crit(t: Target) -> list[httpx.Response]:
    """A correctly signed token declaring a critical extension we do not understand."""
    return [
        await me(t, t.sign(t.claims, {"crit": ["exp"]})),
        await me(t, t.sign(t.claims, {"crit": ["x-unknown"], "x-unknown": True})),
    ]


# --- claim attacks (correctly signed) --------------------------------------------------------


@attack
async def issuer_prefix_and_wrong_issuer(t: Target) -> list[httpx.Response]:
    """``iss`` that is a prefix / extension of the real one, or another issuer."""
    real = t.claims["iss"]
    return [
        await me(t, t.sign({**t.claims, "iss": value}, {}))
        for value in (real[:-1], real + "x", real + ".evil.example", "", "https://evil.example")
    ]


@attack
async def audience_missing_or_wrong(t: Target) -> list[httpx.Response]:
    """No ``aud``, another audience, and a list that merely contains ours."""
    without = {k: v for k, v in t.claims.items() if k != "aud"}
    real = t.claims["aud"]
    return [
        await me(t, t.sign(without, {})),
        await me(t, t.sign({**t.claims, "aud": "another-service"}, {})),
        await me(t, t.sign({**t.claims, "aud": [real, "another-service"]}, {})),
    ]


@attack
async def expired(t: Target) -> list[httpx.Response]:
    """Expired well beyond the leeway; and no ``exp`` at all."""
    now = int(time.time())
    without = {k: v for k, v in t.claims.items() if k != "exp"}
    return [
        await me(t, t.sign({**t.claims, "iat": now - 7200, "exp": now - 3600}, {})),
        await me(t, t.sign(without, {})),
    ]


@attack
async def future_nbf_and_iat(t: Target) -> list[httpx.Response]:
    """Not valid yet: ``nbf`` or ``iat`` an hour ahead."""
    now = int(time.time())
    return [
        await me(t, t.sign({**t.claims, "nbf": now + 3600}, {})),
        await me(t, t.sign({**t.claims, "iat": now + 3600, "exp": now + 7200}, {})),
    ]


@attack
async def swapped_token_types(t: Target) -> list[httpx.Response]:
    """A refresh token where an access token goes, the reverse, and a relabelled type."""
    return [
        await me(t, t.refresh_token),
        await t.http.post(REFRESH, json={"refresh_token": t.access_token}),
        await me(t, t.sign({**t.claims, "token_type": "refresh"}, {})),
        await me(t, t.sign({k: v for k, v in t.claims.items() if k != "token_type"}, {})),
    ]


# --- malformed input -------------------------------------------------------------------------


@attack
async def characters_outside_base64url(t: Target) -> list[httpx.Response]:
    """Padding, '+', '/', spaces, unicode and NUL inside the token."""
    head, body, sig = t.access_token.split(".")
    variants = [
        f"{head}==.{body}.{sig}",
        f"{head}.{body}+/.{sig}",
        f"{head}.{body}.{sig}\u200b",
        f"{head}.{body}.{sig[:-1]}é",
        f"{head}.{body}.{sig}%00",
        f"{head} .{body}.{sig}",
        "...",
        "a.b.c",
    ]
    out = []
    for token in variants:
        try:
            out.append(await me(t, token))
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            continue  # the client refuses to send it; no server can be hurt by that
    return out


@attack
async def oversized_tokens(t: Target) -> list[httpx.Response]:
    """Tokens beyond 8 KB: a huge claim, a huge header, a huge signature."""
    big = "x" * 9000
    return [
        await me(t, t.sign({**t.claims, "pad": big}, {})),
        await me(t, raw_token({**t.header, "pad": big}, t.claims)),
        await me(t, t.access_token + "A" * 9000),
    ]


@attack
async def token_in_query_string(t: Target) -> list[httpx.Response]:
    """A valid token offered in the URL (where proxies and logs keep it) is not accepted."""
    return [
        await t.http.get(ME, params={"access_token": t.access_token}),
        await t.http.get(ME, params={"token": t.access_token}),
    ]


@attack
async def wrong_scheme(t: Target) -> list[httpx.Response]:
    """The token under another scheme, doubled, or with the scheme only."""
    values = [
        f"Basic {t.access_token}",
        f"Token {t.access_token}",
        "Bearer",
        "Bearer ",
        f"Bearer {t.access_token} {t.access_token}",
    ]
    out = []
    for value in values:
        try:
            out.append(await t.http.get(ME, headers={"Authorization": value}))
        except httpx.LocalProtocolError:
            # Over a real socket, h11 will not send a value with trailing whitespace ("Bearer
            # "); no server can be hurt by what never leaves the client.
            continue
    return out


# --- assurance claims: auth_time, amr, acr (issue 14) -----------------------------------------

SENSITIVE = "/api/v1/auth/email/change"


async def sensitive(t: Target, token: str) -> httpx.Response:
    """Call a route that needs a recent (and, with MFA, aal2) sign-in with ``token``."""
    return await t.http.post(
        SENSITIVE,
        json={"new_email": f"moved-{uuid.uuid4().hex[:8]}@example.com", "password": t.password},
        headers={"Authorization": f"Bearer {token}"},
    )


def _assurance_edits(claims: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The claim sets an attacker wants: a stronger, a newer, or an absent sign-in."""
    without = {k: v for k, v in claims.items() if k not in ("auth_time", "amr", "acr")}
    return {
        "acr raised": {**claims, "acr": "aal2"},
        "amr and acr raised": {**claims, "amr": ["pwd", "otp"], "acr": "aal2"},
        "amr edited to a passkey": {**claims, "amr": ["hwk", "user"], "acr": "aal2"},
        "auth_time moved forward": {**claims, "auth_time": int(time.time()) + 3600},
        "claims removed": without,
    }


def _attacker_signer(alg: str) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    """A key of the deployment's algorithm that is not the deployment's."""
    if alg == "EdDSA":
        key: Any = ed25519.Ed25519PrivateKey.generate()
    elif alg == "RS256":
        key = attacker_rsa()
    else:
        key = b"an attacker's guess at the secret, 32+ bytes long"
    return lambda claims, header: jwt.encode(claims, key, algorithm=alg, headers=header)


@attack
async def assurance_claims_edited_without_the_key(t: Target) -> list[httpx.Response]:
    """``acr``/``amr`` raised, ``auth_time`` moved forward or the three removed, re-signed
    WITHOUT the key (original signature kept, ``alg: none``, an attacker's key under our
    ``kid``): 401 on a plain route and on a sensitive one — the edit gains nothing."""
    head, _body, sig = t.access_token.split(".")
    forge = _attacker_signer(t.header["alg"])
    out = []
    for claims in _assurance_edits(t.claims).values():
        body = b64(json.dumps(claims, separators=(",", ":")).encode())
        for token in (
            f"{head}.{body}.{sig}",
            raw_token({**t.header, "alg": "none"}, claims),
            forge(claims, {"kid": t.header.get("kid")}),
        ):
            for response in (await me(t, token), await sensitive(t, token)):
                assert response.status_code == 401, (response.request.url, response.text)
                out.append(response)
    return out


@attack
async def assurance_claims_inconsistent_but_signed(t: Target) -> list[httpx.Response]:
    """Signed WITH the real key (an insider, a leaked key) but inconsistent: ``acr`` aal2
    with ``amr`` ["pwd"], ``auth_time`` after ``iat``, one of the three missing, unknown or
    empty methods, a non-integer time. The codec checks them against each other: 401."""
    claims = t.claims
    iat = claims["iat"]
    variants = [
        {**claims, "acr": "aal2"},
        {**claims, "amr": ["pwd", "otp"], "acr": "aal1"},
        {**claims, "auth_time": iat + 60},
        {**claims, "auth_time": str(claims["auth_time"])},
        {**claims, "auth_time": True},
        {**claims, "amr": []},
        {**claims, "amr": "pwd otp", "acr": "aal2"},
        {**claims, "amr": ["pwd", "sms"]},
        {k: v for k, v in claims.items() if k != "acr"},
        {k: v for k, v in claims.items() if k != "amr"},
        {k: v for k, v in claims.items() if k != "auth_time"},
    ]
    out = []
    for variant in variants:
        token = t.sign(variant, {})
        for response in (await me(t, token), await sensitive(t, token)):
            assert response.status_code == 401, (variant, response.text)
            out.append(response)
    # All three removed is a token minted before the claims existed: it reads as a password
    # sign-in at the epoch, so no sensitive route takes it (its /me still works: not sent).
    legacy = {k: v for k, v in claims.items() if k not in ("auth_time", "amr", "acr")}
    refused = await sensitive(t, t.sign(legacy, {}))
    assert refused.status_code == 401, refused.text
    assert "insufficient_user_authentication" in refused.headers["www-authenticate"]
    return [*out, refused]


# --- session attacks -------------------------------------------------------------------------


@attack
async def replayed_refresh_token(t: Target) -> list[httpx.Response]:
    """A refresh token spent and then replayed after the grace window is refused (the target
    runs with a grace window of 0 s), and the family dies with it."""
    first = await t.http.post(REFRESH, json={"refresh_token": t.refresh_token})
    assert first.status_code == 200, first.text
    successor = first.json()["refresh_token"]
    replay = await t.http.post(REFRESH, json={"refresh_token": t.refresh_token})
    after = await t.http.post(REFRESH, json={"refresh_token": successor})
    return [replay, after]


# --- header spoofing -------------------------------------------------------------------------


@attack
async def host_header_spoofing(t: Target) -> list[httpx.Response]:
    """A Host outside the allow-list (cache poisoning, password-reset link poisoning)."""
    out = []
    for host in ("evil.example", "localhost.evil.example", "localhost:80@evil.example"):
        out.append(await t.http.get("/health", headers={"Host": host}))
        out.append(
            await t.http.get(
                ME, headers={"Host": host, "Authorization": f"Bearer {t.access_token}"}
            )
        )
    return out


@attack
async def forwarded_for_spoofing(t: Target) -> list[httpx.Response]:
    """Rotating ``X-Forwarded-For`` from an untrusted peer buys no extra login attempts: the
    failures are still counted against the real peer (or the email), so they end in 429."""
    out = []
    email = f"victim-{uuid.uuid4().hex[:8]}@example.com"
    for i in range(12):
        out.append(
            await t.http.post(
                "/api/v1/auth/login",
                json={"email": email, "password": f"wrong password {i}"},
                headers={"X-Forwarded-For": f"198.51.100.{i}", "X-Real-IP": f"198.51.100.{i}"},
            )
        )
    statuses = [r.status_code for r in out]
    assert 429 in statuses, f"spoofed X-Forwarded-For escaped the login limits: {statuses}"
    return [r for r in out if r.status_code != 429]


# --- mass assignment -------------------------------------------------------------------------


@attack
async def mass_assignment_on_register(t: Target) -> list[httpx.Response]:
    """Privilege fields smuggled into registration are refused, not silently accepted."""
    out = []
    for extra in (
        {"is_superuser": True},
        {"is_active": False},
        {"role": "admin"},
        {"organization_id": str(uuid.uuid4())},
        {"id": str(uuid.uuid4())},
        {"hashed_password": "$argon2id$v=19$m=19456,t=2,p=1$abc$def"},
    ):
        body = {
            "email": f"mass-{uuid.uuid4().hex[:8]}@example.com",
            "password": "an acceptable passphrase",
            **extra,
        }
        out.append(await t.http.post("/api/v1/auth/register", json=body))
    return out


@attack
async def mass_assignment_on_password_change(t: Target) -> list[httpx.Response]:
    """Extra fields on an authenticated write are refused too."""
    return [
        await t.http.post(
            "/api/v1/auth/password",
            json={
                "current_password": t.password,
                "new_password": "another acceptable passphrase",
                "is_superuser": True,
            },
            headers={"Authorization": f"Bearer {t.access_token}"},
        )
    ]


# --- the attacker's starting position ---------------------------------------------------------

REAL_LOGIN_LIMITS = ("login_rate_limit", "login_ip_failure_limit", "login_account_failure_limits")


def attack_settings(**overrides: Any) -> dict[str, Any]:
    """Settings of an attacked deployment: real limits on login, a generous global limit so the
    corpus itself is not throttled, and no refresh grace window (replays count at once).
    Hashing is cheaper than production's: no attack here is about the password hash."""
    return {
        "refresh_reuse_interval_seconds": 0,
        "argon2_memory_kib": 8192,
        "argon2_time_cost": 1,
        "rate_limit_per_minute": 100_000,
        # make_settings makes every limit generous for the rest of the suite; an attacked
        # deployment has the real (default) login limits.
        **{name: Settings.model_fields[name].default for name in REAL_LOGIN_LIMITS},
        **overrides,
    }


def signer(settings: Settings) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    """Sign with the deployment's real current key (for claim-validation attacks)."""
    if settings.jwt_keys_dir is None:
        assert settings.secret_key is not None
        ring = KeyRing.from_secret(settings.secret_key.get_secret_value())
    else:
        ring = KeyRing([load_private_key(p) for p in sorted(settings.jwt_keys_dir.glob("*.pem"))])
    key = ring.current

    def sign(claims: dict[str, Any], extra_headers: dict[str, Any]) -> str:
        return jwt.encode(
            claims,
            key.signing_material,
            algorithm=key.algorithm,
            headers={"kid": key.kid, **extra_headers},
        )

    return sign


async def make_target(
    http: httpx.AsyncClient, settings: Settings, email: str = "attacker@example.com"
) -> Target:
    """Register a user, log in, and read the published keys, as an attacker would.

    ``http`` may be an in-process client (``helpers.client_for``) or one whose ``base_url`` is
    a running server: the corpus only uses paths. ``settings`` must be the deployment's (its
    key signs the claim-validation attacks).
    """
    if isinstance(http._transport, httpx.ASGITransport):
        await register(http, email)
    else:  # a running server: the 202 says nothing more (enumeration-safe register)
        body = {"email": email, "password": PASSWORD}
        response = await http.post("/api/v1/auth/register", json=body)
        assert response.status_code == 202, response.text
    pair = await login(http, email)
    keys = (await http.get("/.well-known/jwks.json")).json()["keys"]
    return Target(
        http=http,
        email=email,
        password=PASSWORD,
        access_token=pair["access_token"],
        refresh_token=pair["refresh_token"],
        sign=signer(settings),
        public_keys=keys,
    )


def check(responses: list[httpx.Response], *secrets: str) -> None:
    """Assert the attack was refused cleanly: an accepted 4xx, no 500, nothing echoed."""
    assert responses, "the attack produced no request"
    for response in responses:
        assert response.status_code in ACCEPTED, (
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:300]}"
        )
        for secret in secrets:
            if secret:
                assert secret not in response.text, "a credential was echoed back"
