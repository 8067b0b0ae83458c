"""API keys that name tenants: who a bearer token is, for the services that have tenants.

A keys file holds one key per line as `<tenant> sha256:<hex digest of the key>`, so the
file (a Kubernetes Secret, say) never holds a usable key. A line `<tenant> x509:<common
name>` names a client certificate instead: on a gRPC service with mutual TLS
(--tls-client-ca-file), a caller whose verified certificate has that common name acts as
that tenant, without a bearer key. Blank lines and `#` comments are ignored. Make a key
line with

    printf '%s' "$KEY" | sha256sum | awk -v t=alice '{print t, "sha256:" $1}'

The service's own token (`--auth-token[-file]`) stays valid and acts as tenant
"default", the operator's. With neither configured, every caller is "default": the
loopback development setup, as with the gRPC services. A keys file with no key in it is
an error rather than "no keys", so revoking the last key never opens the door.

The file is read again when it changes (a Kubernetes Secret update, an edited file):
removing a line revokes that key within a second. A change that does not parse keeps the
previous keys and is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pathlib
import re
import time

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HASHED = re.compile(r"sha256:([0-9a-f]{64})")
_CERTIFICATE = re.compile(r"x509:(\S{1,256})")


class ApiKeys:
    """Resolves `Authorization: Bearer <key>` to a tenant name."""

    RELOAD_CHECK_SECONDS = 1.0

    def __init__(
        self,
        tenants_by_digest: dict[str, str],
        keys_file: str = "",
        service_token: str = "",
        tenants_by_certificate: dict[str, str] | None = None,
    ) -> None:
        self._tenants_by_digest = dict(tenants_by_digest)
        self._tenants_by_certificate = dict(tenants_by_certificate or {})
        self._keys_file = keys_file
        self._service_token = service_token
        self._stamp = _stamp(keys_file)
        self._checked = time.monotonic()

    @classmethod
    def load(cls, keys_file: str = "", service_token: str = "") -> ApiKeys:
        """Keys from `keys_file` plus the service token as tenant "default"; raises ValueError
        naming the line of a malformed entry, or when the file holds no key."""
        digests, certificates = cls._parse(keys_file, service_token)
        return cls(digests, keys_file, service_token, certificates)

    @staticmethod
    def _parse(keys_file: str, service_token: str) -> tuple[dict[str, str], dict[str, str]]:
        tenants: dict[str, str] = {}
        certificates: dict[str, str] = {}
        if keys_file:
            for number, raw in enumerate(pathlib.Path(keys_file).read_text().splitlines(), 1):
                line = raw.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.split()
                if len(parts) != 2 or not TENANT_NAME.fullmatch(parts[0]):
                    raise ValueError(_bad_line(keys_file, number))
                if parts[0] == DEFAULT_TENANT:
                    raise ValueError(
                        f"{keys_file}:{number}: tenant {DEFAULT_TENANT!r} is the operator's (the service token's);"
                        " give the tenant another name"
                    )
                if certificate := _CERTIFICATE.fullmatch(parts[1]):
                    name = certificate.group(1)
                    if certificates.get(name, parts[0]) != parts[0]:
                        raise ValueError(
                            f"{keys_file}:{number}: this certificate already belongs to tenant {certificates[name]!r}"
                        )
                    certificates[name] = parts[0]
                    continue
                if not _HASHED.fullmatch(parts[1]):
                    raise ValueError(_bad_line(keys_file, number))
                digest = _HASHED.fullmatch(parts[1]).group(1)
                if digest in tenants and tenants[digest] != parts[0]:
                    raise ValueError(f"{keys_file}:{number}: this key already belongs to tenant {tenants[digest]!r}")
                tenants[digest] = parts[0]
            if not tenants and not certificates:
                raise ValueError(f"{keys_file}: no keys in it (to run without keys, do not give a keys file)")
        if service_token:
            tenants[digest_of(service_token)] = DEFAULT_TENANT
        return tenants, certificates

    def _reload_if_changed(self) -> None:
        if not self._keys_file or time.monotonic() - self._checked < self.RELOAD_CHECK_SECONDS:
            return
        self._checked = time.monotonic()
        stamp = _stamp(self._keys_file)
        if stamp == self._stamp:
            return
        try:
            self._tenants_by_digest, self._tenants_by_certificate = self._parse(self._keys_file, self._service_token)
        except (OSError, ValueError) as exc:
            log.error("API keys file changed but cannot be used; keeping the previous keys: %s", exc)
        else:
            log.info("API keys reloaded", extra={"keys": len(self._tenants_by_digest)})
        self._stamp = stamp

    @property
    def required(self) -> bool:
        """Whether callers must present a key (False: everyone is tenant "default")."""
        return bool(self._tenants_by_digest or self._tenants_by_certificate)

    def tenant_for_certificate(self, common_names: list[str]) -> str | None:
        """The tenant of a verified client certificate's common name, or None."""
        self._reload_if_changed()
        for name in common_names:
            if name in self._tenants_by_certificate:
                return self._tenants_by_certificate[name]
        return None

    @property
    def tenants(self) -> set[str]:
        return set(self._tenants_by_digest.values()) or {DEFAULT_TENANT}

    def tenant_for(self, key: str | None) -> str | None:
        """The key's tenant, or None when the key is missing or unknown."""
        self._reload_if_changed()
        if not self.required:
            return DEFAULT_TENANT
        if not key:
            return None
        presented = digest_of(key)
        # Compare every digest in constant time rather than a dict lookup, so timing says
        # nothing about how close a guess came to a stored digest.
        found = None
        for digest, tenant in self._tenants_by_digest.items():
            if hmac.compare_digest(digest, presented):
                found = tenant
        return found


def _bad_line(keys_file: str, number: int) -> str:
    return (
        f"{keys_file}:{number}: expected '<tenant> sha256:<64 lowercase hex>' or '<tenant> x509:<certificate common"
        " name>', with a tenant of letters, digits, '.', '_' or '-' (the key itself never goes in this file)"
    )


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path) if path else None
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino) if info else None


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
