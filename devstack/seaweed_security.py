"""SeaweedFS's own protections for ``weed mini``: only the S3 gateway, with its keys, writes.

Without them, any local process could write into the bucket without a key through the filer's
HTTP port, ask the master for a file id and write it to a volume, or call the filer's gRPC API.
So ``weed_command`` (seaweed.py) starts ``weed mini`` with ``-disableHttp`` (no filer HTTP API and
no master ``/dir/assign``) and this module writes its ``security.toml`` (mode 0600, read from the
working directory, which must be the server's folder) with:

- ``[jwt.signing]``: a volume server accepts a write only with a token signed by this key, which the
  master issues with each file id (to the filer, over mutual TLS);
- ``[jwt.filer_signing]`` (and ``.read``): the filer's HTTP API, were it enabled, would take writes
  and reads only with a token of this key, which the S3 gateway signs;
- ``[grpc.*]``: mutual TLS on every gRPC port (master, volume, filer, S3, admin, worker) with a
  certificate authority generated here: a client without its certificate is refused.

Keys and certificates are generated at every start (none is stored data), under ``<root>/tls``.
"""

from __future__ import annotations

import datetime
import os
import secrets
from pathlib import Path

# Every gRPC component of `weed mini` (server side) and the client section its clients use.
GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker", "client")
CERT_DAYS = 3650


def write_private(path: Path, data: bytes) -> None:
    """``data`` to ``path`` with mode 0600 from the start (replacing an older file)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def write_certificates(folder: Path) -> dict[str, Path]:
    """A new CA and one certificate (server and client use) signed by it: ca, cert, key paths."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=CERT_DAYS))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _authority_certificate(ca_key, valid)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _service_certificate(ca, ca_key, key.public_key(), valid)
    pem = serialization.Encoding.PEM
    paths = {"ca": folder / "ca.crt", "cert": folder / "seaweedfs.crt", "key": folder / "seaweedfs.key"}
    write_private(paths["ca"], ca.public_bytes(pem))
    write_private(paths["cert"], cert.public_bytes(pem))
    write_private(
        paths["key"],
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    return paths


def _name(common: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _authority_certificate(ca_key, valid: tuple[datetime.datetime, datetime.datetime]):
    """The self-signed certificate authority: signs certificates only (no path below it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return (
        x509.CertificateBuilder()
        .subject_name(_name("experiments-dagster seaweedfs CA"))
        .issuer_name(_name("experiments-dagster seaweedfs CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )


def _service_certificate(ca, ca_key, public_key, valid: tuple[datetime.datetime, datetime.datetime]):
    """The certificate every SeaweedFS component serves and presents as a client, for 127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    return (
        x509.CertificateBuilder()
        .subject_name(_name("experiments-dagster seaweedfs"))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def write_security_config(root: Path) -> Path:
    """``<root>/security.toml`` (0600): JWT signing keys and gRPC mutual TLS, all new."""
    tls = write_certificates(root / "tls")
    lines = ["# Written by devstack at each start; see seaweed_security.py."]
    for section in ("jwt.signing", "jwt.filer_signing", "jwt.filer_signing.read"):
        lines += [f"[{section}]", f'key = "{secrets.token_urlsafe(32)}"', "expires_after_seconds = 60", ""]
    lines += ["[access]", "ui = false", "", "[grpc]", f'ca = "{tls["ca"]}"', ""]
    for component in GRPC_COMPONENTS:
        lines += [f"[grpc.{component}]", f'cert = "{tls["cert"]}"', f'key = "{tls["key"]}"', ""]
    path = root / "security.toml"
    write_private(path, "\n".join(lines).encode())
    return path
