"""LoRA adapter updates end to end: a real rft-rollout (`lora_rollout`: models/demo-base,
--max-lora-rank 8) takes PEFT adapters over both transports and then generates exactly
what transformers computes on the merged model; bad adapters are refused with the
previous policy serving; a full update removes the adapter."""

from __future__ import annotations

import dataclasses
import threading
import time

import grpc
import numpy as np
import pytest
from rft.common.v1 import common_pb2
from rft.rollout.v1 import rollout_pb2
from rft_common.weights import file_update_requests, weight_update_requests
from rollout_helpers import current_version, metric_value, save_safetensors, token_prompt

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Largest |vLLM logprob - transformers log-softmax| accepted, in nats (as in test_parity).
LOGPROB_BOUND = 1e-4
MAX_TOKENS = 32


def chat_prompt(text: str) -> rollout_pb2.Prompt:
    return rollout_pb2.Prompt(chat=rollout_pb2.ChatPrompt(messages=[common_pb2.ChatMessage(role="user", content=text)]))


PROMPTS = [chat_prompt("What is 30 + 27?"), chat_prompt("What is 92 + 31?"), token_prompt([5, 6, 7])]
PROMPTS += [token_prompt([40, 41, 42, 43])]


@dataclasses.dataclass
class Adapter:
    lora: rollout_pb2.LoraAdapter
    arrays: dict[str, np.ndarray]  # PEFT's names
    merged: object  # transformers model: the base with the adapter merged in


def peft_adapter(base_dir, rank: int, alpha: float, seed: int, std: float) -> Adapter:
    """A PEFT adapter on the model in `base_dir`, B random (PEFT starts it at zero) so
    that it changes the outputs, and the PEFT-merged model as the reference."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS, lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=std)
    arrays = {name: t.detach().numpy().copy() for name, t in get_peft_model_state_dict(peft_model).items()}
    return Adapter(rollout_pb2.LoraAdapter(rank=rank, alpha=alpha), arrays, peft_model.merge_and_unload().eval())


@pytest.fixture(scope="module")
def adapters(lora_rollout) -> dict[str, Adapter]:
    base = lora_rollout.model_dir
    return {
        "X": peft_adapter(base, rank=8, alpha=16, seed=1, std=0.3),
        "Y": peft_adapter(base, rank=4, alpha=12, seed=2, std=0.3),
    }


@pytest.fixture(scope="module", autouse=True)
def base_model(lora_rollout):
    """demo-base, served again as full weights: the shared service may hold whatever
    weights earlier tests left (a learner's LoRA job after an SFT warm-up pushes the
    warmed-up model as its base), and the adapters here are checked against demo-base."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(lora_rollout.model_dir, dtype=torch.float32).eval()
    state = [(name, tensor.numpy()) for name, tensor in model.state_dict().items()]
    update(lora_rollout, weight_update_requests(current_version(lora_rollout.stub) + 1, state))
    return model


def greedy(service) -> rollout_pb2.GenerateResponse:
    request = rollout_pb2.GenerateRequest(
        prompts=PROMPTS, sampling=rollout_pb2.SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    )
    return service.Generate(request, timeout=120)


def outputs(service) -> list[list[int]]:
    return [list(result.samples[0].token_ids) for result in greedy(service).results]


def reference(model, prompt_ids: list[int]) -> tuple[list[int], np.ndarray]:
    """transformers' greedy completion and the log-softmax of its tokens."""
    import torch

    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        completion = model.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=0)[0]
        logprobs = torch.log_softmax(model(completion[None]).logits[0].float(), dim=-1)
    tokens = completion[len(prompt_ids) :]
    positions = torch.arange(len(prompt_ids) - 1, len(completion) - 1)
    return tokens.tolist(), logprobs[positions, tokens].numpy()


def assert_serves(service, model, version: int) -> list[list[int]]:
    """Greedy samples of the service are transformers' on `model`, labelled `version`."""
    completions = []
    for result in greedy(service).results:
        sample = result.samples[0]
        tokens, logprobs = reference(model, list(result.prompt_token_ids))
        assert list(sample.token_ids) == tokens
        np.testing.assert_allclose(sample.logprobs, logprobs, rtol=0, atol=LOGPROB_BOUND)
        assert sample.policy_version == version
        completions.append(tokens)
    return completions


def adapter_dirs(lora_rollout) -> list[str]:
    return sorted(path.name for path in lora_rollout.staging_dir.iterdir())


def lora_rank_metric(lora_rollout) -> float | None:
    return metric_value(lora_rollout.proc.metrics(), "rft_rollout_lora_rank")


def update(lora_rollout, messages) -> rollout_pb2.UpdateWeightsResponse:
    return lora_rollout.stub.UpdateWeights(iter(list(messages)), timeout=120)


def test_a_streamed_adapter_serves_what_transformers_computes_on_the_merged_model(
    lora_rollout, adapters, base_model
) -> None:
    adapter = adapters["X"]
    version = current_version(lora_rollout.stub) + 1
    before = outputs(lora_rollout.stub)

    response = update(lora_rollout, weight_update_requests(version, adapter.arrays.items(), lora=adapter.lora))
    assert (response.version, response.tensor_count) == (version, len(adapter.arrays))
    assert response.total_bytes == sum(array.nbytes for array in adapter.arrays.values())

    after = assert_serves(lora_rollout.stub, adapter.merged, version)
    assert after != before  # the adapter matters on these prompts
    info = lora_rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=10)
    assert info.policy_version == version and info.max_lora_rank == 8
    assert info.HasField("lora") and (info.lora.rank, info.lora.alpha) == (8, 16.0)
    assert len(adapter_dirs(lora_rollout)) == 1  # the staged adapter the engine serves from
    assert lora_rank_metric(lora_rollout) == 8


def test_a_file_adapter_replaces_the_previous_one(lora_rollout, adapters) -> None:
    adapter = adapters["Y"]
    version = current_version(lora_rollout.stub) + 1
    previous_dirs = adapter_dirs(lora_rollout)
    path = save_safetensors(adapter.arrays, lora_rollout.weights_dir / "adapter-y.safetensors")

    response = update(lora_rollout, file_update_requests(version, path.name, lora=adapter.lora))
    assert (response.version, response.tensor_count) == (version, len(adapter.arrays))

    assert_serves(lora_rollout.stub, adapter.merged, version)
    info = lora_rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=10)
    assert (info.lora.rank, info.lora.alpha) == (4, 12.0)
    # The service serves its own copy: the client's file is untouched and may go.
    dirs = adapter_dirs(lora_rollout)
    assert len(dirs) == 1 and not set(dirs) & set(previous_dirs)
    assert path.exists()
    path.unlink()


# -- bad adapters: (build the arrays and header, expected message fragment) -----------


def _rename_module(arrays, old: str, new: str):
    return {name.replace(old, new): array for name, array in arrays.items()}


def wrong_shape(arrays, lora):
    name = "base_model.model.model.layers.1.mlp.up_proj.lora_A.weight"
    return {**arrays, name: arrays[name][:, :64].copy()}, lora, f"('{name}'): shape [8, 64], expected [8, 128]"


def rank_above_max(arrays, lora):
    wide = {name: np.concatenate([array, array], axis=0 if ".lora_A." in name else 1) for name, array in arrays.items()}
    return (
        wide,
        rollout_pb2.LoraAdapter(rank=16, alpha=32),
        "header.lora.rank: 16 is above this server's max_lora_rank 8",
    )


def unknown_module(arrays, lora):
    renamed = _rename_module(arrays, "layers.0.self_attn.q_proj", "layers.0.self_attn.qq_proj")
    return renamed, lora, "unknown module; the model has no state-dict key 'model.layers.0.self_attn.qq_proj.weight'"


def a_without_b(arrays, lora):
    name = "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"
    kept = {key: array for key, array in arrays.items() if key != name}
    return kept, lora, f"module 'model.layers.0.mlp.down_proj' has lora_A but no lora_B ('{name}')"


def alpha_zero(arrays, lora):
    return (
        arrays,
        rollout_pb2.LoraAdapter(rank=lora.rank, alpha=0.0),
        "header.lora.alpha: 0.0 must be a finite number > 0",
    )


def negative_base_version(arrays, lora):
    return (
        arrays,
        rollout_pb2.LoraAdapter(rank=lora.rank, alpha=lora.alpha, base_version=-1),
        "header.lora.base_version: -1 must be at least 0",
    )


BAD_ADAPTERS = {
    "wrong shape": wrong_shape,
    "rank above max": rank_above_max,
    "unknown module": unknown_module,
    "A without B": a_without_b,
    "alpha 0": alpha_zero,
    "negative base version": negative_base_version,
}


@pytest.mark.parametrize("transport", ["stream", "file"])
@pytest.mark.parametrize("case", list(BAD_ADAPTERS))
def test_a_bad_adapter_is_refused_and_the_previous_policy_keeps_serving(
    lora_rollout, adapters, case: str, transport: str
) -> None:
    version = current_version(lora_rollout.stub)
    before = (outputs(lora_rollout.stub), adapter_dirs(lora_rollout))
    arrays, lora, expected = BAD_ADAPTERS[case](adapters["X"].arrays, adapters["X"].lora)
    if transport == "stream":
        messages = weight_update_requests(version + 1, arrays.items(), lora=lora)
    else:
        path = save_safetensors(arrays, lora_rollout.weights_dir / "bad-adapter.safetensors")
        messages = file_update_requests(version + 1, path.name, lora=lora)
    with pytest.raises(grpc.RpcError) as error:
        update(lora_rollout, messages)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert expected in error.value.details()
    assert current_version(lora_rollout.stub) == version
    assert (outputs(lora_rollout.stub), adapter_dirs(lora_rollout)) == before


def test_an_adapter_the_engine_cannot_load_is_refused_with_the_previous_policy_serving(lora_rollout) -> None:
    # lm_head is a 2-D weight of the model, so the request is well formed, but vLLM
    # takes no adapter on it: the engine refuses it when it loads it.
    version = current_version(lora_rollout.stub)
    before = (outputs(lora_rollout.stub), adapter_dirs(lora_rollout))
    rng = np.random.default_rng(0)
    arrays = {
        "base_model.model.lm_head.lora_A.weight": rng.standard_normal((8, 128)).astype(np.float32),
        "base_model.model.lm_head.lora_B.weight": rng.standard_normal((259, 8)).astype(np.float32),
    }
    lora = rollout_pb2.LoraAdapter(rank=8, alpha=16)
    with pytest.raises(grpc.RpcError) as error:
        update(lora_rollout, weight_update_requests(version + 1, arrays.items(), lora=lora))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, error.value.details()
    assert f"the engine refused the adapter (version {version} keeps serving)" in error.value.details()
    assert "lm_head" in error.value.details()
    assert current_version(lora_rollout.stub) == version
    assert (outputs(lora_rollout.stub), adapter_dirs(lora_rollout)) == before


def test_an_adapter_for_other_full_weights_is_refused_and_one_for_these_is_taken(
    lora_rollout, adapters, base_model
) -> None:
    """A learner names the full weights its adapter goes on (base_version): a replica
    that restarted between the two pushes holds other weights and must not serve the
    adapter on them."""
    x = adapters["X"]
    version = current_version(lora_rollout.stub)
    state = [(name, tensor.numpy()) for name, tensor in base_model.state_dict().items()]
    update(lora_rollout, weight_update_requests(version + 1, state))
    before = (outputs(lora_rollout.stub), adapter_dirs(lora_rollout))

    stale = rollout_pb2.LoraAdapter(rank=x.lora.rank, alpha=x.lora.alpha, base_version=version)
    with pytest.raises(grpc.RpcError) as error:
        update(lora_rollout, weight_update_requests(version + 2, x.arrays.items(), lora=stale))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, error.value.details()
    assert (
        f"the adapter goes on full weights version {version}, but this replica holds full weights version "
        f"{version + 1}" in error.value.details()
    )
    assert current_version(lora_rollout.stub) == version + 1
    assert (outputs(lora_rollout.stub), adapter_dirs(lora_rollout)) == before

    current = rollout_pb2.LoraAdapter(rank=x.lora.rank, alpha=x.lora.alpha, base_version=version + 1)
    update(lora_rollout, weight_update_requests(version + 2, x.arrays.items(), lora=current))
    assert_serves(lora_rollout.stub, x.merged, version + 2)
    info = lora_rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=10)
    assert (info.lora.rank, info.lora.base_version) == (x.lora.rank, version + 1)


def merged_weights(state: dict[str, np.ndarray], adapter: Adapter) -> dict[str, np.ndarray]:
    """`state` plus (alpha / rank) * B @ A on every adapted weight (computed here, not by PEFT)."""
    scale = adapter.lora.alpha / adapter.lora.rank
    merged = dict(state)
    for name, a in adapter.arrays.items():
        if ".lora_A." in name:
            module = name.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            b = adapter.arrays[name.replace(".lora_A.", ".lora_B.")]
            merged[f"{module}.weight"] = state[f"{module}.weight"] + scale * (b @ a)
    return merged


def model_with(base_model, weights: dict[str, np.ndarray]):
    import copy

    import torch

    model = copy.deepcopy(base_model)
    model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()})
    return model.eval()


def test_a_full_update_removes_the_adapter_and_a_later_adapter_adds_to_it(lora_rollout, adapters, base_model) -> None:
    x, y = adapters["X"], adapters["Y"]
    version = current_version(lora_rollout.stub)
    update(lora_rollout, weight_update_requests(version + 1, y.arrays.items(), lora=y.lora))

    # Full weights: X merged into the base. Were Y still applied, outputs would differ.
    full = {name: t.detach().numpy().copy() for name, t in x.merged.state_dict().items()}
    update(lora_rollout, weight_update_requests(version + 2, full.items()))
    assert_serves(lora_rollout.stub, x.merged, version + 2)
    info = lora_rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=10)
    assert not info.HasField("lora")
    assert adapter_dirs(lora_rollout) == [] and lora_rank_metric(lora_rollout) == 0

    # An adapter goes on top of the last full update.
    update(lora_rollout, weight_update_requests(version + 3, y.arrays.items(), lora=y.lora))
    assert_serves(lora_rollout.stub, model_with(base_model, merged_weights(full, y)), version + 3)


def test_adapter_swaps_under_concurrent_generation_keep_every_sample_on_one_version(lora_rollout, adapters) -> None:
    """Like test_versioning, with adapters: requests carry their adapter from the moment
    they are submitted, so a swap must not let one in with the adapter it replaces."""
    probes = [[5, 6, 7], [40, 41, 42, 43], [70, 3, 71]]
    request = dict(
        prompts=[token_prompt(ids) for ids in probes],
        sampling=rollout_pb2.SamplingParams(n=2, temperature=0.0, max_tokens=MAX_TOKENS),
    )
    names = ["X", "Y"]
    version = current_version(lora_rollout.stub)
    adapter_of_version: dict[int, str] = {}
    expected: dict[str, list[list[int]]] = {}

    def apply(name: str) -> rollout_pb2.UpdateWeightsResponse:
        nonlocal version
        version += 1
        adapter_of_version[version] = name
        adapter = adapters[name]
        return update(lora_rollout, weight_update_requests(version, adapter.arrays.items(), lora=adapter.lora))

    for name in names:
        apply(name)
        response = lora_rollout.stub.Generate(rollout_pb2.GenerateRequest(**request), timeout=120)
        expected[name] = [list(result.samples[0].token_ids) for result in response.results]
    for index in range(len(probes)):  # the adapters are told apart on every probe
        assert expected["X"][index][:4] != expected["Y"][index][:4], index

    stop = threading.Event()
    collected: list[rollout_pb2.Sample] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            while not stop.is_set():
                for message in lora_rollout.stub.StreamGenerate(
                    rollout_pb2.StreamGenerateRequest(**request), timeout=120
                ):
                    collected.append(message.sample)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    clients = [threading.Thread(target=client) for _ in range(3)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(0.3)
        for name in names * 3:
            apply(name)
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=120)
    assert not errors, errors

    assert len({sample.policy_version for sample in collected}) >= 4  # generation overlapped the swaps
    for sample in collected:
        produced = expected[adapter_of_version[sample.policy_version]][sample.prompt_index]
        tokens = list(sample.token_ids)
        if sample.finish_reason == rollout_pb2.FINISH_REASON_ABORT:
            assert tokens == produced[: len(tokens)], (sample.policy_version, tokens, produced)
        else:
            assert tokens == produced, (sample.policy_version, tokens, produced)


def test_a_server_without_lora_support_refuses_an_adapter(rollout, models) -> None:
    info = rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=10)
    assert info.max_lora_rank == 0 and not info.HasField("lora")
    rng = np.random.default_rng(0)
    arrays = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": rng.standard_normal((8, 128), np.float32),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": rng.standard_normal((128, 8), np.float32),
    }
    lora = rollout_pb2.LoraAdapter(rank=8, alpha=16)
    path = save_safetensors(arrays, models.weights_dir / "adapter.safetensors")
    try:
        for messages in (
            weight_update_requests(info.policy_version + 1, arrays.items(), lora=lora),
            file_update_requests(info.policy_version + 1, path.name, lora=lora),
        ):
            with pytest.raises(grpc.RpcError) as error:
                rollout.stub.UpdateWeights(messages, timeout=60)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "start it with --max-lora-rank" in error.value.details()
    finally:
        path.unlink()
    assert current_version(rollout.stub) == info.policy_version
    assert list(rollout.staging_dir.iterdir()) == []
