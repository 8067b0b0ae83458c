#!/usr/bin/env python3
"""Write a self-signed TLS set, a bearer token and an API keys file for an overlay's secretGenerator.

    python deploy/k8s/make_secrets.py deploy/k8s/overlays/gpu/secrets [--namespace rft] [--tenant demo]

Writes ca.crt (and ca.key, which no Secret references: keep or delete it), one
<service>.crt / <service>.key per service, each valid for the Service's DNS names,
`token`, and `api-keys`: the learner HTTP API's keys file (RFT_LEARNER_API_KEYS_FILE),
one line `<tenant> sha256:<hex sha256 of the key>` per key. It is written with one
key for one tenant (--tenant, default "demo"); the key itself is printed once and never
stored, so note it (or write a new file with --force). Add a tenant with a line of

    printf '%s' "$KEY" | sha256sum | awk -v t=alice '{print t, "sha256:" $1}'

The service token (`token`) also works on the HTTP API, as tenant "default".

For production put your own PKI's files under the same names instead; the directory is
git-ignored. Existing files are kept unless --force is given: the TLS set and token as
a whole (when ca.crt exists), and api-keys on its own (so a directory from before it
existed gets one).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import pathlib
import re
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
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # as rft_common.api_keys


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


def make_api_keys(out_dir: pathlib.Path, tenant: str = "demo", force: bool = False) -> str | None:
    """Write `api-keys` with one new key for `tenant`; return the key (None: the file was kept)."""
    if not TENANT_NAME.fullmatch(tenant):
        raise ValueError(f"tenant {tenant!r}: letters, digits, '.', '_' or '-', at most 64")
    path = out_dir / "api-keys"
    if path.exists() and not force:
        return None
    key = "sk-" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    header = "# <tenant> sha256:<hex sha256 of the key>, one line per key; the keys themselves are never stored\n"
    _write(path, f"{header}{tenant} sha256:{digest}\n".encode(), 0o600)
    return key


def make_secrets(
    out_dir: pathlib.Path, namespace: str = "rft", days: int = 365, force: bool = False, tenant: str = "demo"
) -> str | None:
    """Write what is missing (everything with `force`); return the new API key, if one was made."""
    out_dir.mkdir(parents=True, exist_ok=True)
    api_key = make_api_keys(out_dir, tenant, force)
    if (out_dir / "ca.crt").exists() and not force:
        return api_key
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
    return api_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--namespace", default="rft")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--tenant", default="demo", help="tenant of the API key written to api-keys")
    args = parser.parse_args()
    try:
        api_key = make_secrets(args.out_dir, args.namespace, args.days, args.force, args.tenant)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {args.out_dir}")
    if api_key:
        print(f"API key of tenant {args.tenant!r} (printed once; api-keys holds only its sha256): {api_key}")


if __name__ == "__main__":
    main()
