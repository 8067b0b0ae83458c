"""The grader core: validate, grade, and the tenant registry, in plain Python.

The servicer turns protobuf into these calls and domain errors into status codes;
tests drive it through a real channel. Specs are measured, parsed and validated on a
thread (see spec_cache.py), and every response is fitted to the limits (limits.py).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import re
import time
from typing import Any

from rft_common.paging import InvalidPageToken, next_page_token, page_window
from rft_common.tenancy import tenant_label

from rft_grader.domain import Disabled, ErrorKind, GraderError, InvalidRequest, InvalidSpec, Issue, Outcome, Pair
from rft_grader.graders import Runtime, build_grader
from rft_grader.graders.python import sandbox_unavailable_reason
from rft_grader.limits import Limits, fit_response
from rft_grader.metrics import BATCH_SIZE, GRADE_SECONDS, GRADES
from rft_grader.python_tools import PythonTools
from rft_grader.registry import GraderRecord, Registry
from rft_grader.spec import AnySpec, MultiSpec, spec_type
from rft_grader.spec_cache import SpecCache

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_NAME_CHARS = 256

# name -> (description, defined by OpenAI's grader schema)
GRADER_TYPES: dict[str, tuple[str, bool]] = {
    "string_check": ("Exact or substring comparison (eq, ne, like, ilike); 1.0 or 0.0.", True),
    "text_similarity": ("fuzzy_match, bleu, gleu, meteor, rouge_1..5, rouge_l between input and reference.", True),
    "python": ("User Python grade(sample, item) -> float, run in a sandbox.", True),
    "score_model": ("A chat model scores the sample within a range.", True),
    "label_model": ("A chat model picks a label; passing_labels score 1.0.", True),
    "multi": ("Named sub-graders combined by an arithmetic calculate_output.", True),
    "math_equivalence": ("math-verify equality of answer and reference (0.5 == 1/2 == \\frac{1}{2}).", False),
    "ranked_list": ("Position of the correct entry in a ranked list: top@1, top@5, top@max.", False),
    "json_check": ("Structured output: JSON Schema and expected field values.", False),
}


@dataclasses.dataclass(frozen=True)
class TypeStatus:
    name: str
    description: str
    openai_compatible: bool
    enabled: bool


@dataclasses.dataclass(frozen=True)
class GradeReport:
    grader_type: str
    outcomes: list[Outcome]
    seconds: float


@dataclasses.dataclass(frozen=True)
class GraderPage:
    graders: list[GraderRecord]
    next_page_token: str


def tenant_of(raw: str) -> str:
    """The request's tenant ('' means default); InvalidRequest for an unusable name."""
    if not raw:
        return DEFAULT_TENANT
    if not _TENANT.match(raw):
        raise InvalidRequest(
            f"tenant {raw[:80]!r} is invalid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return raw


class GraderCore:
    def __init__(self, registry: Registry, runtime: Runtime) -> None:
        self.registry = registry
        self.runtime = runtime
        self.limits: Limits = runtime.limits
        self.python_tools = PythonTools(runtime.sandbox, self.limits)
        """Python tools of tenants, run in the python graders' sandbox."""
        self._specs = SpecCache(
            self.limits.spec_cache_bytes,
            max_spec_bytes=self.limits.max_spec_bytes,
            max_graders=self.limits.max_multi_graders,
        )

    # --- types ------------------------------------------------------------------------

    def disabled_reason(self, kind: str) -> str:
        if kind == "python":
            return sandbox_unavailable_reason(self.runtime.sandbox)
        if kind in ("score_model", "label_model"):
            return self.runtime.models.disabled_reason
        return ""

    def grader_types(self) -> list[TypeStatus]:
        statuses = []
        for name, (description, openai) in GRADER_TYPES.items():
            reason = self.disabled_reason(name)
            text = f"{description} Disabled: {reason.rstrip('.')}." if reason else description
            statuses.append(TypeStatus(name, text, openai, not reason))
        return statuses

    def _disabled_issues(self, spec: AnySpec) -> list[Issue]:
        parts = spec.graders.items() if isinstance(spec, MultiSpec) else [("", spec)]
        issues = []
        for name, part in parts:
            if reason := self.disabled_reason(part.type):
                field = f"graders.{name}.type" if name else "type"
                issues.append(Issue(field, f"{part.type} graders are disabled on this server: {reason}"))
        return issues

    async def _parse(self, raw: Any) -> AnySpec:
        """The typed spec (cached; measured against max_spec_bytes), parsed on a thread."""
        return await asyncio.to_thread(self._specs.parse, raw)

    async def _runnable(self, raw: Any) -> AnySpec:
        spec = await self._parse(raw)
        if issues := self._disabled_issues(spec):
            raise Disabled("; ".join(f"{i.field}: {i.message}" for i in issues))
        return spec

    # --- validate and grade ----------------------------------------------------------

    async def validate(self, raw: Any) -> tuple[str, list[Issue]]:
        """(type, issues): every problem of the spec, including a type disabled here."""
        try:
            spec = await self._parse(raw)
        except InvalidSpec as exc:
            return spec_type(raw), exc.issues
        return spec.type, self._disabled_issues(spec)

    async def grade(self, tenant: str, pairs: list[Pair], spec: Any = None, grader_id: str = "") -> GradeReport:
        limit = self.limits.max_batch_items
        if len(pairs) > limit:
            raise InvalidRequest(f"items: {len(pairs)} items in one call; at most {limit} (max_batch_items)")
        if grader_id:
            spec = (await self.registry.get(tenant, grader_id)).spec
        elif spec is None:
            raise InvalidRequest("grader: set spec or grader_id")
        parsed = await self._runnable(spec)
        started = time.perf_counter()
        outcomes = await self._grade(parsed, tenant, pairs)
        seconds = time.perf_counter() - started
        await asyncio.to_thread(fit_response, outcomes, self.limits)
        self._record(parsed.type, tenant, outcomes, seconds)
        return GradeReport(parsed.type, outcomes, seconds)

    async def _grade(self, spec: AnySpec, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(pairs)
        todo = []
        limit = self.limits.max_text_chars
        for i, pair in enumerate(pairs):
            if len(pair.sample.output_text) > limit:
                message = f"output_text has {len(pair.sample.output_text)} characters; at most {limit} (max_text_chars)"
                outcomes[i] = Outcome.failed(ErrorKind.INVALID_INPUT, message)
            else:
                todo.append(i)
        if todo:
            try:
                grader = await asyncio.to_thread(build_grader, spec, self.runtime.for_call())  # compiles templates
                graded = await grader.grade(tenant, [pairs[i] for i in todo])
            except GraderError:
                raise
            except Exception as exc:  # a bug in a grader must cost this batch, not the service
                log.exception("grader %s failed", spec.type)
                graded = [Outcome.failed(ErrorKind.EXCEPTION, f"internal grader error: {exc}") for _ in todo]
            for i, outcome in zip(todo, graded, strict=True):
                outcomes[i] = outcome
        return outcomes

    @staticmethod
    def _record(kind: str, tenant: str, outcomes: list[Outcome], seconds: float) -> None:
        for label, count in collections.Counter(o.outcome_label for o in outcomes).items():
            GRADES.labels(kind, tenant_label(tenant), label).inc(count)
        GRADE_SECONDS.labels(kind).observe(seconds)
        BATCH_SIZE.observe(len(outcomes))

    # --- registry ---------------------------------------------------------------------

    async def register(self, tenant: str, name: str, raw: Any) -> GraderRecord:
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise InvalidRequest(f"name: must be 1-{MAX_NAME_CHARS} printable characters")
        spec = await self._runnable(raw)
        return await self.registry.create(tenant, name, spec.type, raw)

    async def get(self, tenant: str, grader_id: str) -> GraderRecord:
        return await self.registry.get(tenant, grader_id)

    async def list(self, tenant: str, page_size: int, page_token: str) -> GraderPage:
        try:
            limit, offset = page_window(page_size, page_token)
        except InvalidPageToken as exc:
            raise InvalidRequest(f"page_token / page_size: {exc}") from None
        records = await self.registry.list(tenant, limit, offset)
        return GraderPage(records, next_page_token(offset, limit, len(records)))

    async def delete(self, tenant: str, grader_id: str) -> None:
        await self.registry.delete(tenant, grader_id)
