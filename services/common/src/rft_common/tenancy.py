"""Who is calling, per RPC: the tenant named by the caller's credential, or the operator.

The service token (--auth-token) is the operator's: it may act for any tenant, which is
what the learner does when it grades a job for the job's tenant. A tenant key
(--api-keys-file) acts for its own tenant only: a request's `tenant` field may name that
tenant or be empty, never another. Without any credential configured every caller is the
operator (the loopback development setup)."""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib

from rft_common.api_keys import DEFAULT_TENANT


@dataclasses.dataclass(frozen=True)
class Caller:
    tenant: str | None
    """The caller's tenant, or None for the operator."""

    @property
    def operator(self) -> bool:
        return self.tenant is None


OPERATOR = Caller(None)
CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("rft_caller", default=OPERATOR)


class TenantDenied(PermissionError):
    """A tenant credential asked to act for another tenant."""


def acting_tenant(requested: str) -> str:
    """The tenant a request acts for ('' = the caller's own, or "default" for the operator)."""
    caller = CALLER.get()
    if caller.operator:
        return requested or DEFAULT_TENANT
    if requested and requested != caller.tenant:
        raise TenantDenied(f"this credential belongs to tenant {caller.tenant!r}; it cannot act for {requested[:80]!r}")
    return caller.tenant


def owner_filter() -> str | None:
    """The tenant whose objects the caller may see: its own, or None (all) for the operator."""
    return CALLER.get().tenant


def tenant_label(tenant: str) -> str:
    """A tenant as a metrics label: a stable pseudonym ("t-" and 12 hex digits of its
    SHA-256), so /metrics, which Prometheus and probes read without credentials, does not
    list who the tenants are. An operator finds a tenant's series with
    `printf '%s' alice | sha256sum | cut -c1-12`."""
    return "t-" + hashlib.sha256(tenant.encode()).hexdigest()[:12]
