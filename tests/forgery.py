"""Hand-made JWTs, the way an attacker builds them (importable as ``forgery``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from authkeep.security.keys import KeyRing

Sign = Callable[[bytes], bytes]


def b64(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Sign) -> str:
    """A JWT with exactly this header and these claims, signed by ``sign``."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def public_pem(private: Any) -> bytes:
    """The PEM of a private key's public half (what an attacker downloads)."""
    return bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def signer(private: Any) -> Sign:
    """Sign with an Ed25519 or RSA (PKCS#1 v1.5, SHA-256) private key."""
    if isinstance(private, rsa.RSAPrivateKey):
        return lambda data: private.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return lambda data: bytes(private.sign(data))


def hs256(secret: bytes) -> Sign:
    """HMAC-SHA256 keyed with ``secret``."""
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


@cache
def attacker_rsa() -> rsa.RSAPrivateKey:
    """An RSA key that is not ours (made once: RSA generation is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def genuine(ring: KeyRing, claims: dict[str, Any]) -> str:
    """``claims`` honestly signed with the ring's current key: the control that proves a
    forgery fails for its flaw, not for a mistake in how it was built."""
    key = ring.current
    return forge(
        {"alg": key.algorithm, "typ": "JWT", "kid": key.kid}, claims, signer(key.signing_material)
    )


def forgeries(ring: KeyRing, claims: dict[str, Any]) -> dict[str, str]:
    """Tokens carrying ``claims`` that an asymmetric ``ring`` must refuse, by attack."""
    key = ring.current
    alg, kid, ours = key.algorithm, key.kid, key.signing_material
    pem = public_pem(ours)
    ed_attacker = ed25519.Ed25519PrivateKey.generate()
    same_kind: Any = ed_attacker if alg == "EdDSA" else attacker_rsa()
    other_alg, other_kind = ("RS256", attacker_rsa()) if alg == "EdDSA" else ("EdDSA", ed_attacker)
    injected = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(same_kind.public_key()))
    return {
        "HS256 keyed with our public key": forge(
            {"alg": "HS256", "typ": "JWT", "kid": kid}, claims, hs256(pem)
        ),
        "HS256 keyed with our public key, no kid": forge(
            {"alg": "HS256", "typ": "JWT"}, claims, hs256(pem)
        ),
        "alg none": forge({"alg": "none", "typ": "JWT", "kid": kid}, claims, lambda _: b""),
        f"{other_alg} on our {alg} kid": forge(
            {"alg": other_alg, "typ": "JWT", "kid": kid}, claims, signer(other_kind)
        ),
        "our alg and kid, attacker's key": forge(
            {"alg": alg, "typ": "JWT", "kid": kid}, claims, signer(same_kind)
        ),
        "unknown kid": forge(
            {"alg": alg, "typ": "JWT", "kid": "attacker-kid"}, claims, signer(same_kind)
        ),
        "no kid": forge({"alg": alg, "typ": "JWT"}, claims, signer(ours)),
        "embedded jwk": forge(
            {"alg": alg, "typ": "JWT", "kid": kid, "jwk": injected}, claims, signer(same_kind)
        ),
    }
