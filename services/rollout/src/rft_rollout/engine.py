"""The inference engine behind a small interface, and its vLLM implementation.

`Engine` is all the core needs: render prompts to token ids, generate one sample,
count unfinished requests, and swap weights or the LoRA adapter between engine steps.
`open_vllm_engine` starts vLLM's AsyncLLM (continuous batching across concurrent RPCs),
warms it up and shuts it down; nothing else in the service imports vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from rft_common import vllm_cpu

from rft_rollout.config import RolloutConfig
from rft_rollout.domain import EngineSample, InvalidRequest, NotReady, PromptInput, SampleRequest

log = logging.getLogger(__name__)

WORKER_EXTENSION = "rft_rollout.worker_extension.WeightReloadExtension"


@dataclasses.dataclass(frozen=True)
class EngineFacts:
    """What the engine reports about itself once started."""

    name: str
    dtype: str
    max_model_len: int
    eos_token_id: int
    vocab_size: int
    collective_backends: tuple[str, ...] = ()
    """torch.distributed backends `receive_weights` joins (rft.rollout.v1.CollectiveWeights)."""
    weight_receivers: int = 1
    """Engine workers each collective transfer reaches (tensor x pipeline parallel size)."""


class WeightsNotApplied(Exception):
    """The engine checked the weights and refused them before changing anything."""


class ChecksumMismatch(WeightsNotApplied):
    """Received bytes did not match the manifest's checksums; nothing was applied."""


class TransferBroken(Exception):
    """A collective transfer failed on the way (the sender went away, a timeout);
    nothing was applied, and the same update may be sent again."""


class Engine(Protocol):
    facts: EngineFacts

    def render_prompt(self, prompt: PromptInput, tools: Sequence[dict] = ()) -> list[int]:
        """Token ids of a chat or text prompt (blocking; token-id prompts are not passed);
        `tools` (OpenAI function format) go to the chat template of a chat prompt."""

    def render_tool_turn(self, tool_messages: list[dict[str, str]], ended_with_eos: bool) -> list[int]:
        """Token ids that follow an assistant turn whose tool calls gave `tool_messages`:
        the end-of-turn token unless the turn ended with it, what the chat template
        writes after it, the tool messages and the next generation prompt (blocking)."""

    async def generate(self, request_id: str, request: SampleRequest, n: int = 1) -> list[EngineSample]:
        """`n` samples of one prompt (sample i seeded with seed + i); cancelling the
        call aborts the engine request. A sample's text is None when it is left to
        `decode`."""

    def decode(self, token_ids: list[list[int]]) -> list[str]:
        """Texts of token-id sequences, special tokens skipped (blocking)."""

    def num_unfinished_requests(self) -> int:
        """Engine requests waiting or running."""

    @property
    def dead(self) -> bool:
        """The engine failed and cannot serve any more."""

    async def swap_weights(self, path: str, expected_shapes: dict[str, list[int]], version_label: str) -> int:
        """Abort in-flight requests, load the safetensors file at `path`, drop the LoRA
        adapter if one serves, label later tokens `version_label`, resume; return the
        number of aborted requests. WeightsNotApplied if the engine refused the file
        with the old weights (and adapter) intact."""

    async def receive_weights(self, transfer: dict) -> None:
        """Join a collective transfer on every worker and receive all of its tensors
        into buffers beside the model (`transfer`: store_address, session, backend,
        world, timeout_seconds, checksum_algorithm, specs as (name, dtype, shape,
        size_bytes, checksum)). The engine does not step meanwhile: requests in flight
        wait, on the old weights. TransferBroken if the transfer failed on the way,
        ChecksumMismatch for bytes that do not match, WeightsNotApplied if a worker has
        no room for them; nothing is applied either way."""

    async def swap_received_weights(self, session: str, version_label: str) -> int:
        """swap_weights for the tensors `receive_weights` received for `session`."""

    async def discard_received_weights(self) -> None:
        """Drop tensors received and not applied."""

    async def swap_lora(self, adapter_dir: str, version_label: str) -> int:
        """Abort in-flight requests, load the PEFT adapter in `adapter_dir` (kept until
        the next swap) as the adapter of every later request in place of the previous
        one, label later tokens `version_label` (an integer), resume; return the number
        of aborted requests. WeightsNotApplied if the engine refused the adapter with the
        previous policy (weights and adapter) intact."""


class VllmEngine:
    """vLLM AsyncLLM with FINAL_ONLY outputs (streamed per-token outputs cost ~40% of
    throughput), sampled-token logprobs (raw: before temperature / top-p / top-k) and
    per-token weight-version labels.

    A LoRA adapter is fixed per request when the request is submitted, so submissions
    and swaps exclude each other (`_submission`, `_paused`): a request never reaches
    the engine carrying an adapter that a swap under way is replacing, and every
    request runs with the adapter of the version its tokens are labelled with.
    """

    def __init__(self, llm, name: str, collective_backends: tuple[str, ...] = ()) -> None:
        self._llm = llm
        self._lora = None  # the LoRARequest every request carries; None: no adapter
        self._no_swap = asyncio.Event()  # cleared while a swap runs
        self._no_swap.set()
        self._submitting = 0  # requests on their way into the engine
        self._none_submitting = asyncio.Event()
        self._none_submitting.set()
        model_config = llm.model_config
        self._tokenizer = llm.get_tokenizer()
        eos = self._tokenizer.eos_token_id
        self.facts = EngineFacts(
            name=name,
            dtype=str(model_config.dtype).removeprefix("torch."),
            max_model_len=int(model_config.max_model_len),
            eos_token_id=int(eos) if eos is not None else -1,
            vocab_size=int(model_config.get_vocab_size()),
            collective_backends=collective_backends,
            weight_receivers=int(llm.vllm_config.parallel_config.world_size),
        )

    # -- prompts ---------------------------------------------------------------------

    def render_prompt(self, prompt: PromptInput, tools: Sequence[dict] = ()) -> list[int]:
        if prompt.chat is not None:
            messages = [{"role": message.role, "content": message.content} for message in prompt.chat]
            try:
                text = self._tokenizer.apply_chat_template(
                    messages, tools=list(tools) or None, tokenize=False, add_generation_prompt=True
                )
            except ValueError as exc:  # transformers: no chat template
                raise InvalidRequest(
                    f"chat: the model cannot render chat prompts ({exc}); send text or token_ids"
                ) from None
            # The template already wrote the special tokens it wants.
            return list(self._tokenizer.encode(text, add_special_tokens=False))
        assert prompt.text is not None
        return list(self._tokenizer.encode(prompt.text))

    def render_tool_turn(self, tool_messages: list[dict[str, str]], ended_with_eos: bool) -> list[int]:
        ids = tool_turn_ids(self._tokenizer, tool_messages)
        return ids if ended_with_eos else [self.facts.eos_token_id, *ids]

    # -- generation ------------------------------------------------------------------

    def _sampling_params(self, request: SampleRequest, n: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=n,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            max_tokens=request.max_tokens,
            stop=list(request.stop) or None,
            stop_token_ids=list(request.stop_token_ids) or None,
            seed=request.seed,
            logprobs=0,  # the sampled token's logprob only
            # Incremental detokenisation (and decoding every logprob's token) costs
            # ~15% of throughput; it is only needed to find stop strings. Without
            # them the text is decoded once at the end (`decode`).
            detokenize=bool(request.stop),
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def generate(self, request_id: str, request: SampleRequest, n: int = 1) -> list[EngineSample]:
        from vllm.exceptions import VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            params = self._sampling_params(request, n)
            final = await self._run(request_id, {"prompt_token_ids": request.prompt_token_ids}, params)
        except EngineDeadError as exc:
            raise NotReady(f"the inference engine died: {exc}") from exc
        except VLLMValidationError as exc:  # a request the service's own checks let through
            raise InvalidRequest(f"sampling: the engine refused the request: {exc}") from exc
        assert final.finished
        metrics = final.metrics
        ttft = getattr(metrics, "first_token_latency", 0.0) if metrics is not None else 0.0
        samples = [self._sample(request_id, completion) for completion in final.outputs]
        if ttft > 0 and any(sample.token_ids for sample in samples):
            samples[0].time_to_first_token = ttft  # one first token per engine request
        return samples

    async def _run(self, request_id: str, prompt: dict, params):
        """Submit one engine request with the adapter serving now and return its final
        output; cancelling the call aborts the request. This is AsyncLLM.generate with
        the submission (AsyncLLM.add_request, which returns once the request is sent to
        the engine core) kept apart from swaps."""
        from vllm.v1.engine.exceptions import EngineDeadError

        async with self._submission() as lora:
            collector = await self._llm.add_request(request_id, prompt, params, lora_request=lora)
        try:
            while True:
                output = collector.get_nowait() or await collector.get()
                if output.finished:
                    return output
        except EngineDeadError:
            raise
        except BaseException:  # cancelled, or failed: the engine must not keep running it
            await self._llm.abort(collector.request_id, internal=True)
            raise
        finally:
            collector.close()

    @contextlib.asynccontextmanager
    async def _submission(self):
        """Wait while a swap runs, then yield the adapter requests carry now; a swap
        waits until every submission under way has left this block."""
        while not self._no_swap.is_set():
            await self._no_swap.wait()
        self._submitting += 1
        self._none_submitting.clear()
        try:
            yield self._lora
        finally:
            self._submitting -= 1
            if self._submitting == 0:
                self._none_submitting.set()

    @contextlib.asynccontextmanager
    async def _paused(self):
        """Stop submissions, pause the engine aborting in-flight requests (they report
        the old version; requests arriving meanwhile wait and run on the new policy),
        yield the number aborted; resume on exit."""
        self._no_swap.clear()
        try:
            await self._none_submitting.wait()
            aborted = self.num_unfinished_requests()
            await self._llm.pause_generation(mode="abort", clear_cache=True)
            try:
                yield aborted
            finally:
                await self._llm.resume_generation()
        finally:
            self._no_swap.set()

    def _sample(self, request_id: str, completion) -> EngineSample:
        token_ids = list(completion.token_ids)
        logprobs: list[float] = []
        if completion.logprobs:
            logprobs = [
                float(entry[token].logprob) for entry, token in zip(completion.logprobs, token_ids, strict=True)
            ]
        finish = completion.finish_reason
        if finish not in ("stop", "length", "abort"):
            raise RuntimeError(f"engine finished request {request_id} with reason {finish!r}")
        version: str | None = None
        spans = completion.weight_versions or []
        if spans:
            version = spans[0].version
            if len(spans) > 1:
                # Cannot happen with abort-on-update; if it ever did, keep only the tokens
                # of the first version so that a sample never mixes two policies.
                log.error("sample %s spans weight versions %s; truncated to the first", request_id, spans)
                end = spans[0].end
                token_ids, logprobs, finish = token_ids[:end], logprobs[:end], "abort"
        return EngineSample(
            text=completion.text if completion.text or not token_ids else None,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=finish,
            weight_version=version,
            time_to_first_token=None,
        )

    def decode(self, token_ids: list[list[int]]) -> list[str]:
        """Texts of completions the engine did not detokenise (blocking)."""
        return list(self._tokenizer.batch_decode(token_ids, skip_special_tokens=True))

    def num_unfinished_requests(self) -> int:
        return int(self._llm.get_num_unfinished_requests())

    @property
    def dead(self) -> bool:
        return bool(self._llm.errored)

    # -- weights ---------------------------------------------------------------------

    async def swap_weights(self, path: str, expected_shapes: dict[str, list[int]], version_label: str) -> int:
        return await self._swap_full("rft_reload_weights", (path, expected_shapes), version_label)

    async def receive_weights(self, transfer: dict) -> None:
        # Each worker blocks in the broadcast; the engine steps again once all returned.
        results = await self._llm.collective_rpc("rft_receive_weights", args=(transfer,))
        failed = [result for result in results if not result["received"]]
        if failed:
            await self.discard_received_weights()
            # A worker's own verdict first: the others then only saw their peer leave.
            for kind in ("checksum", "refused"):
                if verdict := [result["error"] for result in failed if result["kind"] == kind]:
                    raise (ChecksumMismatch if kind == "checksum" else WeightsNotApplied)(verdict[0])
            raise TransferBroken(failed[0]["error"])

    async def swap_received_weights(self, session: str, version_label: str) -> int:
        return await self._swap_full("rft_apply_received", (session,), version_label)

    async def discard_received_weights(self) -> None:
        await self._llm.collective_rpc("rft_discard_received")

    async def _swap_full(self, method: str, args: tuple, version_label: str) -> int:
        """Paused: full weights through the worker extension's `method`, the adapter dropped."""
        async with self._paused() as aborted:
            results = await self._llm.collective_rpc(method, args=args)
            refused = [result["error"] for result in results if not result["applied"]]
            if refused:
                raise WeightsNotApplied(refused[0])
            if self._lora is not None:  # a full update replaces the whole policy
                previous, self._lora = self._lora, None
                await self._llm.remove_lora(previous.lora_int_id)
            # KV blocks cached from prompts under the old weights must not be reused.
            await self._llm.reset_prefix_cache()
            await self._llm.update_weight_version(version_label)
        return aborted

    async def swap_lora(self, adapter_dir: str, version_label: str) -> int:
        from vllm.lora.request import LoRARequest

        # The version is the adapter's id: unique, and it names the adapter in vLLM's logs.
        adapter = LoRARequest(f"policy-v{version_label}", int(version_label), adapter_dir)
        async with self._paused() as aborted:
            # Loaded now, not by the first request that carries it, so that an adapter
            # vLLM cannot load is refused here. vLLM reads the whole adapter before it
            # evicts the previous one (it holds one), which stays on a refusal.
            try:
                added = await self._llm.add_lora(adapter)
            except Exception as exc:
                if self.dead:
                    raise
                raise WeightsNotApplied(str(exc)) from None
            if not added:
                raise WeightsNotApplied(f"vLLM did not load adapter {adapter.lora_int_id}")
            previous, self._lora = self._lora, adapter
            if previous is not None:
                await self._llm.remove_lora(previous.lora_int_id)
            await self._llm.reset_prefix_cache()
            await self._llm.update_weight_version(version_label)
        return aborted

    async def label_weights(self, version_label: str) -> None:
        await self._llm.update_weight_version(version_label)

    # -- warm-up ---------------------------------------------------------------------

    async def warm_up(self, requests: int, max_tokens: int = 16) -> float:
        """Generate `requests` concurrent samples from random prompts of varied lengths
        so the first real batches do not pay for kernel set-up; returns seconds."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if requests <= 0:
            return 0.0
        started = time.perf_counter()
        rng = random.Random(0)
        longest = max(2, min(64, self.facts.max_model_len - max_tokens - 1))
        params = SamplingParams(
            max_tokens=max_tokens, ignore_eos=True, logprobs=0, output_kind=RequestOutputKind.FINAL_ONLY
        )

        async def one(index: int) -> None:
            ids = [rng.randrange(self.facts.vocab_size) for _ in range(rng.randint(1, longest))]
            async for _ in self._llm.generate({"prompt_token_ids": ids}, params, f"warmup-{index}"):
                pass

        # Two rounds: the first batch after start-up is much slower than later ones.
        for round_index in range(2):
            await asyncio.gather(*(one(round_index * requests + i) for i in range(requests)))
        return time.perf_counter() - started


# A stand-in conversation whose assistant turn the tool messages follow: rendering it
# with and without them gives the template's text for the tool turn alone.
_BASE_TURN = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def tool_turn_text(tokenizer, tool_messages: list[dict[str, str]]) -> str:
    """What the chat template writes after an assistant turn's end-of-turn token when
    `tool_messages` follow it, through the next generation prompt.

    The template renders a stand-in conversation once without and once with the tool
    messages (and the generation prompt); the second must extend the first, and the
    text from the first's last end-of-turn token on is the tool turn (for ChatML:
    "\n<|im_start|>tool\n...<|im_end|>\n<|im_start|>assistant\n")."""
    eos = tokenizer.eos_token
    before = tokenizer.apply_chat_template(_BASE_TURN, tokenize=False)
    after = tokenizer.apply_chat_template(_BASE_TURN + tool_messages, tokenize=False, add_generation_prompt=True)
    if not after.startswith(before):
        raise InvalidRequest("episode: the chat template re-renders earlier turns when tool messages follow")
    end_of_turn = before.rfind(eos) if eos else -1
    if end_of_turn < 0:
        raise InvalidRequest("episode: the chat template does not end an assistant turn with the eos token")
    return before[end_of_turn + len(eos) :] + after[len(before) :]


def tool_turn_ids(tokenizer, tool_messages: list[dict[str, str]]) -> list[int]:
    """The token ids of the tool turn (`tool_turn_text`), with the tool messages' contents
    tokenised as plain text: a tool result that contains "<|im_end|>" or any other
    special-token string gets the ids of those characters, never the special token, so a
    tool cannot end its turn or open a system turn. The template's own text (its special
    tokens included) is tokenised normally."""
    marks = [f"\x1eRFT-TOOL-CONTENT-{index}-{secrets.token_hex(8)}\x1e" for index in range(len(tool_messages))]
    stand_ins = [{**message, "content": mark} for message, mark in zip(tool_messages, marks, strict=True)]
    text = tool_turn_text(tokenizer, stand_ins)
    ids: list[int] = []
    for mark, message in zip(marks, tool_messages, strict=True):
        if text.count(mark) != 1:
            raise InvalidRequest("episode: the chat template does not write each tool message's content once")
        template, text = text.split(mark)
        ids += tokenizer.encode(template, add_special_tokens=False)
        ids += tokenizer(message["content"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ids + tokenizer.encode(text, add_special_tokens=False)


def _engine_args(config: RolloutConfig):
    from vllm.engine.arg_utils import AsyncEngineArgs

    # One adapter at a time: each LoRA update replaces the one before.
    lora = dict(enable_lora=True, max_lora_rank=config.max_lora_rank, max_loras=1) if config.max_lora_rank else {}
    return AsyncEngineArgs(
        model=config.model,
        dtype=config.dtype,
        max_model_len=config.max_model_len or None,
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_num_seqs=config.max_num_seqs,
        enforce_eager=config.enforce_eager,
        # vLLM 0.32's CPU worker rewinds a seeded request's torch.Generator with
        # set_offset() when its prompt is split across steps, which CPU generators do
        # not support: the engine dies ("CPU Generator does not use offset"). The
        # learner seeds every request for exact resumes, so by default prefills run whole.
        enable_chunked_prefill=config.enable_chunked_prefill,
        seed=config.seed,
        worker_extension_cls=WORKER_EXTENSION,
        **lora,
    )


@contextlib.asynccontextmanager
async def open_vllm_engine(config: RolloutConfig) -> AsyncIterator[VllmEngine]:
    """Start vLLM on `config.model` (blocking start-up runs in a thread so health
    checks keep answering), label the loaded weights version 0, and shut it down on exit."""
    if config.kv_cache_gib > 0:
        # Read by vLLM's CPU backend when its engine process starts.
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(config.kv_cache_gib)
    import vllm
    from vllm.platforms import current_platform
    from vllm.v1.engine.async_llm import AsyncLLM

    if current_platform.is_cpu() and config.cpu_single_process:
        os.environ.update(vllm_cpu.single_process_env(config.cpu_threads, len(os.sched_getaffinity(0))))

    args = _engine_args(config)
    llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
    try:
        # gloo moves host memory, so any engine takes it; NCCL only GPU to GPU.
        backends = ("gloo", "nccl") if current_platform.is_cuda() else ("gloo",)
        engine = VllmEngine(llm, f"vllm {vllm.__version__}", backends)
        await engine.label_weights("0")
        yield engine
    finally:
        llm.shutdown()


def shapes_by_name(specs: Sequence) -> dict[str, list[int]]:
    return {spec.name: list(spec.shape) for spec in specs}
