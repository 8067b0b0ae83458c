#!/usr/bin/env python3
"""Write a self-signed TLS set and a bearer token for an overlay's secretGenerator.

    python deploy/k8s/make_secrets.py deploy/k8s/overlays/gpu/secrets [--namespace rft]

Writes ca.crt (and ca.key, which no Secret references: keep or delete it), one
<service>.crt / <service>.key per service, each valid for the Service's DNS names, and
`token`. For production put your own PKI's files under the same names instead; the
directory is git-ignored. Existing files are kept unless --force is given.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICES = {
    "rollout": ["rft-rollout", "rft-rollout-headless"],
    "grader": ["rft-grader"],
    "learner": ["rft-learner"],
}


def dns_names(names: list[str], namespace: str) -> list[str]:
    """Short, namespaced and fully qualified forms of each Service name."""
    out: list[str] = []
    for name in names:
        out += [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
    return out


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: pathlib.Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def make_secrets(out_dir: pathlib.Path, namespace: str = "rft", days: int = 365, force: bool = False) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "ca.crt").exists() and not force:
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rft {namespace} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(out_dir / "ca.crt", ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(out_dir / "ca.key", _pem_key(ca_key), 0o600)
    for service, names in SERVICES.items():
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(n) for n in dns_names(names, namespace)]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(out_dir / f"{service}.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(out_dir / f"{service}.key", _pem_key(key), 0o600)
    _write(out_dir / "token", secrets.token_urlsafe(32).encode(), 0o600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--namespace", default="rft")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args()
    make_secrets(args.out_dir, args.namespace, args.days, args.force)
    print(f"wrote {args.out_dir}")


if __name__ == "__main__":
    main()
