"""The LoRA adapter checks of weights.py, driven directly (pure, no engine)."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
from rft_rollout.domain import InvalidRequest, LoraAdapter, TensorSpec
from rft_rollout.weights import check_lora_header, check_lora_tensor_set, write_adapter_config

# A model with two adaptable projections ([out, in] = [6, 4] and [4, 6]), a 1-D norm
# and an embedding.
MODEL = {
    spec.name: spec
    for spec in [
        TensorSpec("model.embed_tokens.weight", "float32", (10, 4), 160),
        TensorSpec("model.layers.0.self_attn.q_proj.weight", "float32", (6, 4), 96),
        TensorSpec("model.layers.0.mlp.down_proj.weight", "float32", (4, 6), 96),
        TensorSpec("model.norm.weight", "float32", (4,), 16),
    ]
}
Q = "base_model.model.model.layers.0.self_attn.q_proj"
DOWN = "base_model.model.model.layers.0.mlp.down_proj"


def spec(name: str, shape: tuple[int, ...], dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, dtype, shape, 4 * math.prod(shape) if dtype == "float32" else 2 * math.prod(shape))


def adapter(rank: int = 2) -> list[TensorSpec]:
    return [
        spec(f"{Q}.lora_A.weight", (rank, 4)),
        spec(f"{Q}.lora_B.weight", (6, rank)),
        spec(f"{DOWN}.lora_A.weight", (rank, 6)),
        spec(f"{DOWN}.lora_B.weight", (4, rank)),
    ]


def problems(sent: list[TensorSpec], rank: int = 2) -> str:
    with pytest.raises(InvalidRequest) as error:
        check_lora_tensor_set(sent, MODEL, rank, "manifest")
    return str(error.value)


def test_a_peft_adapter_passes_and_gives_its_modules() -> None:
    assert check_lora_tensor_set(adapter(), MODEL, 2, "manifest") == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.mlp.down_proj",
    ]
    # Any subset of modules is an adapter.
    assert check_lora_tensor_set(adapter()[:2], MODEL, 2, "m") == ["model.layers.0.self_attn.q_proj"]


def test_shapes_follow_the_adapted_weight_and_the_rank() -> None:
    message = problems(adapter(rank=3), rank=2)
    assert (
        f"manifest[0] ('{Q}.lora_A.weight'): shape [3, 4], expected [2, 4] "
        "(lora_A of model.layers.0.self_attn.q_proj.weight [6, 4] at rank 2)"
    ) in message
    assert f"manifest[1] ('{Q}.lora_B.weight'): shape [6, 3], expected [6, 2]" in message
    # A and B swapped (B's [out, rank] sent as A).
    swapped = [spec(f"{Q}.lora_A.weight", (6, 2)), spec(f"{Q}.lora_B.weight", (2, 4))]
    message = problems(swapped)
    assert "shape [6, 2], expected [2, 4]" in message and "shape [2, 4], expected [6, 2]" in message


def test_each_bad_tensor_is_named() -> None:
    sent = [
        spec(f"{Q}.lora_A.weight", (2, 4), dtype="float16"),  # wrong dtype
        spec(f"{Q}.lora_B.weight", (6, 2)),
        spec(f"{Q}.lora_B.weight", (6, 2)),  # duplicate
        spec("model.layers.0.self_attn.q_proj.weight", (6, 4)),  # a full weight, not an adapter tensor
        spec("base_model.model.model.layers.0.self_attn.zz_proj.lora_A.weight", (2, 4)),  # no such module
        spec("base_model.model.model.norm.lora_A.weight", (2, 4)),  # not 2-D
        TensorSpec(f"{DOWN}.lora_A.weight", "float32", (2, 6), 40),  # size does not match the shape
        spec(f"{DOWN}.lora_B.weight", (4, 2)),
    ]
    with pytest.raises(InvalidRequest) as error:
        check_lora_tensor_set(sent, MODEL, 2, "manifest")
    message = str(error.value)
    assert f"manifest[0] ('{Q}.lora_A.weight'): dtype float16 does not match the model's float32" in message
    assert f"manifest[2] ('{Q}.lora_B.weight'): duplicate tensor name" in message
    assert "manifest[3] ('model.layers.0.self_attn.q_proj.weight'): not a LoRA tensor name" in message
    assert "manifest[4] ('base_model.model.model.layers.0.self_attn.zz_proj.lora_A.weight'): unknown module" in message
    assert "and 1 more problem(s)" in message  # at most five are listed
    message = problems(sent[5:])
    assert "model.norm.weight has shape [4]; only 2-D weights take an adapter" in message
    assert "size_bytes 40 does not match dtype and shape (48 bytes)" in message


def test_every_module_needs_both_matrices() -> None:
    message = problems([*adapter()[:2], adapter()[2]])
    assert (
        f"manifest: module 'model.layers.0.mlp.down_proj' has lora_A but no lora_B ('{DOWN}.lora_B.weight')" in message
    )
    assert "has lora_B but no lora_A" in problems(adapter()[1:2])


def test_an_empty_adapter_is_refused() -> None:
    assert "an adapter needs at least one module" in problems([])


def test_rank_and_alpha() -> None:
    check_lora_header(LoraAdapter(8, 16.0), 8)
    check_lora_header(LoraAdapter(1, 0.5), 8)
    cases = {
        LoraAdapter(16, 32.0): "header.lora.rank: 16 is above this server's max_lora_rank 8",
        LoraAdapter(0, 16.0): "header.lora.rank: 0 must be at least 1",
        LoraAdapter(-2, 16.0): "header.lora.rank: -2 must be at least 1",
        LoraAdapter(8, 0.0): "header.lora.alpha: 0.0 must be a finite number > 0",
        LoraAdapter(8, -1.0): "header.lora.alpha: -1.0 must be a finite number > 0",
        LoraAdapter(8, math.inf): "header.lora.alpha: inf must be a finite number > 0",
        LoraAdapter(8, math.nan): "header.lora.alpha: nan must be a finite number > 0",
    }
    for lora, expected in cases.items():
        with pytest.raises(InvalidRequest, match=expected.replace(".", r"\.")):
            check_lora_header(lora, 8)


def test_a_server_without_lora_support_says_how_to_get_it() -> None:
    with pytest.raises(InvalidRequest, match="start it with --max-lora-rank"):
        check_lora_header(LoraAdapter(8, 16.0), 0)


def test_adapter_config_is_what_peft_and_vllm_read(tmp_path: pathlib.Path) -> None:
    from vllm.lora.peft_helper import PEFTHelper

    modules = ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj", "model.layers.0.mlp.down_proj"]
    write_adapter_config(tmp_path, LoraAdapter(8, 12.0), modules)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["bias"] == "none"
    assert (config["r"], config["lora_alpha"], config["target_modules"]) == (8, 12.0, ["down_proj", "q_proj"])
    helper = PEFTHelper.from_local_dir(str(tmp_path), max_position_embeddings=None)
    assert helper.get_rank_and_scaling("model.layers.0.self_attn.q_proj") == (8, 1.5)


def test_max_lora_rank_takes_vllm_ranks_from_flags_and_the_environment(monkeypatch) -> None:
    from rft_common.config import parse_serve_command
    from rft_rollout.config import RolloutConfig

    def parse(*flags: str) -> RolloutConfig:
        return parse_serve_command("rft-rollout", RolloutConfig, "RFT_ROLLOUT", ["serve", "--model", "m", *flags])

    assert parse().max_lora_rank == 0
    assert parse("--max-lora-rank", "8").max_lora_rank == 8
    monkeypatch.setenv("RFT_ROLLOUT_MAX_LORA_RANK", "64")
    assert parse().max_lora_rank == 64
    with pytest.raises(SystemExit, match="--max-lora-rank .*Input should be 0, 1, 8, 16"):
        parse("--max-lora-rank", "4")
