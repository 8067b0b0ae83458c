"""The rollout core: request checks, prompt rendering, sample fan-out, policy versions
and weight updates. Plain Python over the `Engine` interface; no protobuf.

Generate sends one engine request per prompt with its n samples; StreamGenerate one
per sample (seeds seed, seed+1, ... as vLLM seeds an n > 1 request's samples, so both
give the same samples) so that it can yield each sample as it finishes. A cancelled
call aborts exactly its unfinished engine requests.

Weight updates (and so the policy version) are `WeightUpdates`' (updates.py). A
sample's policy version is the engine's label of its tokens, so it is exact by
construction.

With EpisodeParams every sample is an episode (episodes.py): one task per sample runs
its turns, one engine request per turn, with the tools of the `ToolBox`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import pathlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from rft_rollout import metrics
from rft_rollout.domain import (
    EpisodeParams,
    GenerateResult,
    InvalidRequest,
    Limits,
    ModelInfo,
    NotReady,
    PromptInput,
    PromptResult,
    Sample,
    SampleRequest,
    Sampling,
    UpdateHeader,
    UpdateResult,
)
from rft_rollout.engine import Engine
from rft_rollout.episodes import EpisodeDeps, run_episode
from rft_rollout.model_spec import ModelDescription
from rft_rollout.tool_servers import ToolBox
from rft_rollout.updates import Chunk, WeightUpdates

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str
    limits: Limits
    default_max_tokens: int
    weights_dir: str
    staging_dir: pathlib.Path
    max_lora_rank: int = 0  # 0: LoRA updates are refused


def default_staging_dir() -> pathlib.Path:
    """/dev/shm (memory) when present, else the temp dir."""
    shm = pathlib.Path("/dev/shm")
    base = shm if shm.is_dir() else pathlib.Path(tempfile.gettempdir())
    return base / "rft-rollout"


@dataclasses.dataclass
class _Plan:
    prompts: list[list[int]]
    requests: list[SampleRequest]  # one per prompt, seeded with the request's seed
    n: int
    episode: EpisodeParams | None = None
    received: float = dataclasses.field(default_factory=time.monotonic)
    """When the request arrived: an episode's time limit counts from here, so the time its
    request spent being checked (a Python tools description included) is in it."""


class RolloutCore:
    def __init__(
        self,
        engine: Engine,
        model: ModelDescription,
        settings: Settings,
        on_broken: Callable[[str], Awaitable[None]] | None = None,
        tools: ToolBox | None = None,
    ) -> None:
        self.engine = engine
        self.tools = tools or ToolBox([])
        self.model = model
        self.settings = settings
        self.updates = WeightUpdates(engine, model, settings, self._check_serving, self.stop_serving)
        # One thread: tokenizers are not safe to share across threads.
        self._tokenizer_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tokenize")
        self._broken = ""
        self._on_broken = on_broken
        self._tool_turn_problem: str | None = None
        """Why the chat template cannot write tool turns ("" when it can); None until checked."""

    async def stop_serving(self, reason: str) -> None:
        """Refuse every later request (UNAVAILABLE) and report NOT_SERVING, so that an
        orchestrator replaces this replica: used when the engine died or may hold
        half-applied weights."""
        if self._broken:
            return
        log.error("the service stops serving: %s", reason)
        self._broken = reason
        if self._on_broken is not None:
            await self._on_broken(reason)

    def close(self) -> None:
        self._tokenizer_thread.shutdown(wait=False, cancel_futures=True)
        self.updates.close()

    # -- checks ----------------------------------------------------------------------

    def _check_serving(self) -> None:
        if self._broken:
            raise NotReady(f"the service stopped serving: {self._broken}")

    def _resolve_sampling(self, sampling: Sampling) -> tuple[int, dict]:
        limits = self.settings.limits
        n = sampling.n or 1
        if n < 0:
            raise InvalidRequest(f"sampling.n: {sampling.n} is negative")
        if n > limits.max_n:
            raise InvalidRequest(f"sampling.n: {n} is above the limit max_n={limits.max_n}")
        max_tokens = sampling.max_tokens or self.settings.default_max_tokens
        if max_tokens < 0:
            raise InvalidRequest(f"sampling.max_tokens: {sampling.max_tokens} is negative")
        if max_tokens > limits.max_tokens:
            raise InvalidRequest(f"sampling.max_tokens: {max_tokens} is above the limit max_tokens={limits.max_tokens}")
        temperature = 1.0 if sampling.temperature is None else sampling.temperature
        if not math.isfinite(temperature) or temperature < 0:
            raise InvalidRequest(f"sampling.temperature: {temperature} must be a finite number >= 0")
        top_p = 1.0 if sampling.top_p is None else sampling.top_p
        if not (0 < top_p <= 1):
            raise InvalidRequest(f"sampling.top_p: {top_p} must be in (0, 1]")
        top_k = -1 if sampling.top_k is None else sampling.top_k
        if top_k != -1 and top_k < 1:
            raise InvalidRequest(f"sampling.top_k: {top_k} must be -1 (no cut-off) or >= 1")
        if any(not stop for stop in sampling.stop):
            raise InvalidRequest("sampling.stop: stop strings must not be empty")
        vocab = self.engine.facts.vocab_size
        for index, token in enumerate(sampling.stop_token_ids):
            if not 0 <= token < vocab:
                raise InvalidRequest(
                    f"sampling.stop_token_ids[{index}]: {token} is not a token id (vocab_size {vocab})"
                )
        common = dict(
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_tokens=max_tokens,
            stop=tuple(sampling.stop),
            stop_token_ids=tuple(sampling.stop_token_ids),
        )
        return n, common

    def _check_prompt(self, index: int, ids: Sequence[int]) -> None:
        limits = self.settings.limits
        if not ids:
            raise InvalidRequest(f"prompts[{index}]: the prompt is empty")
        if len(ids) > limits.max_prompt_tokens:
            raise InvalidRequest(
                f"prompts[{index}]: {len(ids)} tokens is above the limit max_prompt_tokens={limits.max_prompt_tokens}"
            )
        max_model_len = self.engine.facts.max_model_len
        if len(ids) >= max_model_len:
            raise InvalidRequest(
                f"prompts[{index}]: {len(ids)} tokens leave no room to generate within max_model_len={max_model_len}"
            )

    def _check_episode(self, episode: EpisodeParams | None) -> list[dict]:
        """The tools (chat-template format) an episode request may call."""
        if episode is None:
            return []
        limit = self.settings.limits.max_episode_turns
        if not 1 <= episode.max_turns <= limit:
            raise InvalidRequest(
                f"episode.max_turns: {episode.max_turns} must be 1 to the limit max_episode_turns={limit}"
            )
        usable = self.tools.usable_by(episode.tenant)
        unknown = [name for name in episode.tool_servers if name not in usable]
        if unknown:
            # Servers the tenant may not use are reported as unknown: their names are not its to see.
            raise InvalidRequest(
                f"episode.tool_servers: unknown {unknown} for tenant {episode.tenant!r}; it may use {sorted(usable)}"
            )
        return [tool.as_template_tool() for tool in self.tools.tools_of(episode.tool_servers)]

    def _check_tool_turns(self) -> None:
        """Refuse multi-turn episodes up front when the model's chat template cannot write
        a tool result after an assistant turn (else each episode would fail at its first
        tool call). Checked once; blocking: runs on the tokenizer thread."""
        if self._tool_turn_problem is None:
            stand_in = [{"role": "tool", "content": "0", "name": "tool", "tool_call_id": "call_0"}]
            try:
                self.engine.render_tool_turn(stand_in, True)
                self._tool_turn_problem = ""
            except Exception as exc:  # the template's own error (jinja, ValueError) or ours
                self._tool_turn_problem = str(exc).removeprefix("episode: ")[:500] or type(exc).__name__
        if self._tool_turn_problem:
            raise InvalidRequest(
                f"episode.max_turns: this model's chat template cannot write tool results ({self._tool_turn_problem}); "
                "serve a model whose template has a tool role (e.g. Qwen2.5's), or use max_turns 1"
            )

    def _render(self, prompts: Sequence[PromptInput], tools: Sequence[dict] = ()) -> list[list[int]]:
        """Token ids of every prompt (blocking: runs on the tokenizer thread)."""
        vocab = self.engine.facts.vocab_size
        rendered = []
        for index, prompt in enumerate(prompts):
            given = [prompt.chat is not None, prompt.token_ids is not None, prompt.text is not None]
            if sum(given) != 1:
                raise InvalidRequest(f"prompts[{index}]: exactly one of chat, token_ids or text is required")
            if prompt.token_ids is not None:
                ids = list(prompt.token_ids)
                bad = next((i for i, token in enumerate(ids) if not 0 <= token < vocab), None)
                if bad is not None:
                    raise InvalidRequest(
                        f"prompts[{index}].token_ids[{bad}]: {ids[bad]} is not a token id (vocab_size {vocab})"
                    )
            else:
                if prompt.chat is not None:
                    if not prompt.chat:
                        raise InvalidRequest(f"prompts[{index}].chat.messages: at least one message is required")
                    for m, message in enumerate(prompt.chat):
                        if not message.role:
                            raise InvalidRequest(f"prompts[{index}].chat.messages[{m}].role: must not be empty")
                try:
                    ids = self.engine.render_prompt(prompt, tools) if tools else self.engine.render_prompt(prompt)
                except InvalidRequest as exc:
                    raise InvalidRequest(f"prompts[{index}].{exc}") from None
            self._check_prompt(index, ids)
            rendered.append(ids)
        return rendered

    async def _plan(
        self, prompts: Sequence[PromptInput], sampling: Sampling, episode: EpisodeParams | None = None
    ) -> _Plan:
        received = time.monotonic()
        self._check_serving()
        limits = self.settings.limits
        if not prompts:
            raise InvalidRequest("prompts: at least one prompt is required")
        if len(prompts) > limits.max_prompts:
            raise InvalidRequest(f"prompts: {len(prompts)} prompts is above the limit max_prompts={limits.max_prompts}")
        n, common = self._resolve_sampling(sampling)
        tools = self._check_episode(episode)
        loop = asyncio.get_running_loop()
        if episode is not None and episode.max_turns > 1:
            await loop.run_in_executor(self._tokenizer_thread, self._check_tool_turns)
        if episode is not None and episode.python_tools_source:  # described by the grader (cached)
            tools += [tool.as_template_tool() for tool in await self.tools.python_tools(episode)]
        rendered = await loop.run_in_executor(self._tokenizer_thread, self._render, prompts, tools)
        requests = [SampleRequest(prompt_token_ids=ids, seed=sampling.seed, **common) for ids in rendered]
        metrics.PROMPT_TOKENS.inc(sum(len(ids) for ids in rendered))
        return _Plan(rendered, requests, n, episode, received)

    # -- generation ------------------------------------------------------------------

    async def _samples(
        self, request_id: str, prompt_index: int, request: SampleRequest, n: int, first_index: int = 0
    ) -> list[Sample]:
        """`n` samples of one prompt from one engine request, numbered from `first_index`."""
        started_version = self.updates.version
        try:
            results = await self.engine.generate(request_id, request, n)
        except NotReady as exc:
            await self.stop_serving(str(exc))
            raise
        undecoded = [result for result in results if result.text is None]
        if undecoded:
            loop = asyncio.get_running_loop()
            texts = await loop.run_in_executor(
                self._tokenizer_thread, self.engine.decode, [result.token_ids for result in undecoded]
            )
            for result, text in zip(undecoded, texts, strict=True):
                result.text = text
        samples = []
        for index, result in enumerate(results):
            metrics.GENERATED_TOKENS.inc(len(result.token_ids))
            if result.time_to_first_token is not None:
                metrics.TIME_TO_FIRST_TOKEN.observe(result.time_to_first_token)
            # A sample with no token (aborted before its first step) reports the
            # version that was serving when it was submitted.
            version = int(result.weight_version) if result.weight_version is not None else started_version
            samples.append(
                Sample(
                    prompt_index=prompt_index,
                    sample_index=first_index + index,
                    text=result.text or "",
                    token_ids=result.token_ids,
                    logprobs=result.logprobs,
                    finish_reason=result.finish_reason,
                    policy_version=version,
                )
            )
        return samples

    def _episode_deps(self, params: EpisodeParams) -> EpisodeDeps:
        loop = asyncio.get_running_loop()

        def offload(function, *args):
            return loop.run_in_executor(self._tokenizer_thread, function, *args)

        return EpisodeDeps(
            generate=self.engine.generate,
            decode=self.engine.decode,
            render_tool_turn=self.engine.render_tool_turn,
            offload=offload,
            call_tool=self.tools.caller(params),
            eos_token_id=self.engine.facts.eos_token_id,
            max_model_len=self.engine.facts.max_model_len,
            max_calls_per_turn=self.settings.limits.max_tool_calls_per_turn,
            max_calls_per_episode=self.settings.limits.max_tool_calls_per_episode,
            timeout_seconds=self.settings.limits.episode_timeout_seconds,
        )

    async def _episode(
        self,
        episode_id: str,
        prompt_index: int,
        sample_index: int,
        request: SampleRequest,
        params: EpisodeParams,
        received: float,
    ) -> list[Sample]:
        """One episode as a one-sample list (the shape `_samples` returns)."""
        started_version = self.updates.version
        try:
            run = await run_episode(self._episode_deps(params), episode_id, request, params, received)
        except NotReady as exc:
            await self.stop_serving(str(exc))
            raise
        outcome = run.outcome
        metrics.observe_episode(outcome)
        sampled = sum(outcome.token_mask)
        metrics.GENERATED_TOKENS.inc(sampled)
        finish = {"answer": "stop", "max_turns": "length", "length": "length", "abort": "abort", "timeout": "length"}[
            outcome.end
        ]
        version = int(run.weight_version) if run.weight_version is not None else started_version
        sample = Sample(
            prompt_index=prompt_index,
            sample_index=sample_index,
            text=run.text,
            token_ids=run.trajectory.token_ids,
            logprobs=run.trajectory.logprobs,
            finish_reason=finish,
            policy_version=version,
            episode=outcome,
        )
        return [sample]

    @staticmethod
    def _engine_request_id(request_id: str) -> str:
        # Engine request ids must be unique even when clients reuse theirs.
        return f"{request_id or uuid.uuid4().hex[:16]}-{uuid.uuid4().hex[:8]}"

    def _start(self, plan: _Plan, request_id: str, one_per_sample: bool) -> list[asyncio.Task[list[Sample]]]:
        """Engine requests of a batch: one per prompt with its n samples, or (to stream
        samples one by one) one per sample, seeded seed + sample index as vLLM seeds the
        samples of an n > 1 request, so both ways give the same samples."""
        base = self._engine_request_id(request_id)
        if plan.episode is not None:  # one episode per sample, seeded as one_per_sample
            return [
                asyncio.create_task(
                    self._episode(
                        f"{base}-{p}-{s}",
                        p,
                        s,
                        dataclasses.replace(request, seed=None if request.seed is None else request.seed + s),
                        plan.episode,
                        plan.received,
                    )
                )
                for p, request in enumerate(plan.requests)
                for s in range(plan.n)
            ]
        if not one_per_sample:
            return [
                asyncio.create_task(self._samples(f"{base}-{p}", p, request, plan.n))
                for p, request in enumerate(plan.requests)
            ]
        return [
            asyncio.create_task(
                self._samples(
                    f"{base}-{p}-{s}",
                    p,
                    dataclasses.replace(request, seed=None if request.seed is None else request.seed + s),
                    1,
                    first_index=s,
                )
            )
            for p, request in enumerate(plan.requests)
            for s in range(plan.n)
        ]

    async def generate(
        self,
        prompts: Sequence[PromptInput],
        sampling: Sampling,
        request_id: str,
        episode: EpisodeParams | None = None,
    ) -> GenerateResult:
        """All samples of a batch. Cancelling the call aborts them."""
        metrics.REQUESTS.labels("Generate").inc()
        started = time.perf_counter()
        plan = await self._plan(prompts, sampling, episode)
        # vLLM refuses n > 1 for greedy requests: those go one engine request per sample.
        greedy = plan.requests[0].temperature == 0
        tasks = self._start(plan, request_id, one_per_sample=greedy and plan.n > 1)
        async with _cancel_on_exit(tasks):
            done = await asyncio.gather(*tasks)
        results = [PromptResult(p, ids, []) for p, ids in enumerate(plan.prompts)]
        for samples in done:
            for sample in samples:
                results[sample.prompt_index].samples.append(sample)
        metrics.GENERATION_SECONDS.observe(time.perf_counter() - started)
        return GenerateResult(
            results=results,
            prompt_tokens=sum(len(ids) for ids in plan.prompts),
            completion_tokens=sum(len(sample.token_ids) for samples in done for sample in samples),
        )

    async def stream_generate(
        self,
        prompts: Sequence[PromptInput],
        sampling: Sampling,
        request_id: str,
        episode: EpisodeParams | None = None,
    ) -> AsyncIterator[tuple[Sample, list[int]]]:
        """(sample, its prompt's token ids) as each sample finishes. Closing the
        iterator early (a cancelled call) aborts the unfinished samples."""
        metrics.REQUESTS.labels("StreamGenerate").inc()
        started = time.perf_counter()
        plan = await self._plan(prompts, sampling, episode)
        tasks = self._start(plan, request_id, one_per_sample=True)
        async with _cancel_on_exit(tasks):
            for next_done in asyncio.as_completed(tasks):
                (sample,) = await next_done
                yield sample, plan.prompts[sample.prompt_index]
        metrics.GENERATION_SECONDS.observe(time.perf_counter() - started)

    # -- weight updates --------------------------------------------------------------

    async def update_weights(self, header: UpdateHeader | None, chunks: AsyncIterator[Chunk]) -> UpdateResult:
        """Receive and check a whole update, then apply it atomically (`WeightUpdates`)."""
        return await self.updates.update(header, chunks)

    # -- model info ------------------------------------------------------------------

    def model_info(self, tenant: str | None = None) -> ModelInfo:
        """`tenant`: list only the tool servers it may use (None: every server)."""
        facts = self.engine.facts
        return ModelInfo(
            model=self.settings.model,
            architecture=self.model.architecture,
            num_parameters=self.model.num_parameters,
            vocab_size=self.model.vocab_size,
            max_model_len=facts.max_model_len,
            dtype=facts.dtype,
            policy_version=self.updates.version,
            tensors=self.model.tensors,
            limits=self.settings.limits,
            engine=facts.name,
            eos_token_id=facts.eos_token_id,
            max_lora_rank=self.settings.max_lora_rank,
            lora=self.updates.lora,
            tool_servers=tuple(
                (name, server.config.kind, tuple(tool.name for tool in server.tools))
                for name, server in self.tools.servers.items()
                if tenant is None or server.config.allows(tenant)
            ),
            collective_backends=facts.collective_backends,
            weight_receivers=facts.weight_receivers,
        )


@contextlib.asynccontextmanager
async def _cancel_on_exit(tasks: list[asyncio.Task]):
    """Cancel (and so abort in the engine) whatever is unfinished when the block exits."""
    try:
        yield
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:  # retrieve exceptions so asyncio does not log them as lost
            if task.done() and not task.cancelled():
                task.exception()
