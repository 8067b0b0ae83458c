"""scripts/build_base_model.py: a model directory transformers and vLLM load, with a
character-level tokenizer and a ChatML chat template."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rollout_helpers import REPO, build_base_model


@pytest.fixture(scope="module")
def tokenizer(models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models.base_dir)


def test_each_printable_ascii_character_and_newline_is_one_token(tokenizer) -> None:
    text = "".join(chr(c) for c in range(0x20, 0x7F)) + "\n"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)
    assert sorted(ids) == list(range(3, 99))
    assert tokenizer.decode(ids) == text


def test_any_other_text_round_trips_through_bytes(tokenizer) -> None:
    text = "naïve café\t— 東京 🙂\r\n"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_special_tokens_and_chat_template(tokenizer) -> None:
    assert [tokenizer.pad_token, tokenizer.eos_token] == ["<|endoftext|>", "<|im_end|>"]
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert rendered == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.encode(rendered, add_special_tokens=False)
    assert ids.count(1) == 3 and ids.count(2) == 2


def test_cli_builds_the_same_weights_for_the_same_seed(tmp_path, models) -> None:
    from safetensors.numpy import load_file

    out = tmp_path / "again"
    script = REPO / "scripts" / "build_base_model.py"
    subprocess.run([sys.executable, str(script), "--out", str(out), "--preset", "tiny", "--seed", "0"], check=True)
    again, first = load_file(str(out / "model.safetensors")), load_file(str(models.base_dir / "model.safetensors"))
    assert again.keys() == first.keys()
    assert all((again[name] == first[name]).all() for name in first)


def test_presets_have_the_intended_sizes() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    for preset, low, high in [("tiny", 0.5e6, 1.0e6), ("100m", 90e6, 110e6)]:
        config = build_base_model.model_config(preset, vocab_size=len(build_base_model.vocabulary()))
        assert config.tie_word_embeddings and config.hidden_size // config.num_attention_heads >= 32
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        assert low < sum(p.numel() for p in model.parameters()) < high, preset
