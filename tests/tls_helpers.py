"""Throw-away certificate authorities and TLS servers (PostgreSQL, Redis) for the TLS tests.
Importable as ``tls_helpers``.

The CA and server certificates are made with ``cryptography`` (ECDSA P-256, a day long);
nothing is read from or written to the system's trust store.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from servers import PG_BIN, PostgresProcess, _stop, free_port


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Authority:
    """A self-signed CA; ``cert_file`` is its PEM (what the ``*_SSL_CA_FILE`` settings take)."""

    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_file: Path

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        """A new CA named ``name``, its certificate written to ``directory/<name>.pem``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(name, key, cert, path)

    def issue(self, directory: Path, stem: str, hosts: list[str]) -> tuple[Path, Path]:
        """A server certificate for ``hosts`` (DNS names or IP addresses): its PEM and its
        key's PEM (0600), as ``directory/<stem>.crt`` and ``directory/<stem>.key``."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hosts[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        key_file.chmod(0o600)
        return cert_file, key_file


class TLSPostgres(PostgresProcess):
    """A private PostgreSQL cluster that takes TLS connections only (``ssl = on``,
    ``hostssl`` lines alone in pg_hba.conf), with a certificate issued by ``authority``
    for ``hosts``. :meth:`present` swaps the certificate (``pg_ctl reload``)."""

    def __init__(self, authority: Authority, hosts: list[str]) -> None:
        super().__init__()
        (self.data / "pg_hba.conf").write_text(
            "# TLS only: a clear-text TCP connection matches no line and is refused.\n"
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 trust\n"
            "hostssl all all ::1/128 trust\n"
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        self._install(authority, hosts)

    def _install(self, authority: Authority, hosts: list[str]) -> None:
        cert, key = authority.issue(self.dir, "issued", hosts)
        shutil.copy(cert, self.data / "server.crt")
        shutil.copy(key, self.data / "server.key")
        (self.data / "server.key").chmod(0o600)
        if self._as:
            for path in ("server.crt", "server.key", "pg_hba.conf", "postgresql.conf"):
                shutil.chown(self.data / path, user="postgres", group="postgres")

    def present(self, authority: Authority, hosts: list[str]) -> None:
        """Serve a certificate issued by ``authority`` to new connections from now on."""
        self._install(authority, hosts)
        self._run("pg_ctl", "-D", str(self.data), "reload")

    def plain_url(self, database: str = "postgres") -> str:
        """A URL through the Unix socket (no TLS needed): for set-up as the superuser."""
        return f"postgresql://postgres@/{database}?host={self.dir}&port={self.port}"


def tls_postgres_or_skip(authority: Authority, hosts: list[str]) -> TLSPostgres:
    """A started :class:`TLSPostgres` (skipped, or failed under CI, without the binaries)."""
    if not (PG_BIN / "initdb").is_file():
        from conftest import unavailable

        unavailable("a private PostgreSQL", f"initdb not found in {PG_BIN}")
    cluster = TLSPostgres(authority, hosts)
    try:
        cluster.start()
    except BaseException:
        cluster.remove()
        raise
    return cluster


@dataclass
class TLSRedis:
    """A private ``redis-server`` listening for TLS only, on 127.0.0.1."""

    port: int
    proc: subprocess.Popen[bytes]

    def url(self, host: str = "127.0.0.1") -> str:
        """A ``rediss://`` URL of this server through ``host``."""
        return f"rediss://{host}:{self.port}/0"


@contextlib.contextmanager
def tls_redis(authority: Authority, hosts: list[str], workdir: Path) -> Iterator[TLSRedis]:
    """A TLS-only Redis with a certificate issued by ``authority`` for ``hosts``; skipped
    with the reason when ``redis-server`` is missing or built without TLS."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    cert, key = authority.issue(workdir, "redis", hosts)
    port = free_port()
    log = workdir / "redis-tls.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                "0",
                "--tls-port",
                str(port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(authority.cert_file),
                "--tls-auth-clients",
                "no",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_listening(proc, port, log)
        yield TLSRedis(port, proc)
    finally:
        _stop(proc)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text(errors="replace")
            if "tls" in output.lower() and ("not supported" in output or "Bad directive" in output):
                pytest.skip(f"redis-server is built without TLS support: {output[-300:]}")
            pytest.fail(f"TLS redis-server exited with {proc.returncode}:\n{output[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    pytest.fail("TLS redis-server did not listen within 10 s")
