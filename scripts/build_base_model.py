"""Build a small Hugging Face causal-LM directory from scratch, with no download.

The model is a randomly initialised Qwen2ForCausalLM (tied input/output embeddings) with
a character-level tokenizer: the newline and every printable ASCII character is one
token (ids 3..98), plus three special tokens:

    <|endoftext|>  id 0, padding
    <|im_start|>   id 1, opens a chat turn
    <|im_end|>     id 2, closes a chat turn; the end-of-sequence token

and, so that no input is ever dropped, one token for each remaining byte value (ids
99..258): any other character is spelt as its UTF-8 bytes. The tokenizer is a byte-level
BPE with no merges, saved as a Qwen2Tokenizer, because transformers' AutoTokenizer
always rebuilds Qwen2 tokenizers with the byte-level pipeline: a tokenizer.json with its
own normaliser or pre-tokenizer would be silently replaced when loaded (in vLLM too).

Chat prompts use ChatML, "<|im_start|>{role}\\n{content}<|im_end|>\\n" per message, then
"<|im_start|>assistant\\n" when a generation prompt is asked for.

The directory loads in transformers (AutoModelForCausalLM / AutoTokenizer) and in vLLM
like any other model directory. Presets: "tiny" for tests and the demo, "10m", "100m" and
"200m" (same family, ~10M, ~100M and ~210M parameters) for benchmarks.

    python scripts/build_base_model.py --out models/tiny --preset tiny --seed 0

Other code imports this file (the learner, the demo's pre-training): `build_tokenizer`,
`CHAT_TEMPLATE`, `model_config` and `build_model` are its interface.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from dataclasses import dataclass

PAD_TOKEN = "<|endoftext|>"
IM_START_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START_TOKEN, EOS_TOKEN)
# The newline and printable ASCII (space .. tilde) come first, one token each; the other
# byte values follow so that any UTF-8 text can be spelt.
CHARACTER_BYTES = (0x0A, *range(0x20, 0x7F))

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Preset:
    """Architecture sizes of one model preset."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int


PRESETS: dict[str, Preset] = {
    # ~0.7M parameters: fast enough for tests on 2 CPU cores; the demo pre-trains it.
    # vLLM's CPU attention needs a head size of at least 32, hence hidden 128 for 4 heads.
    "tiny": Preset(128, 2, 4, 2, 768, 512),
    # ~100M parameters, for weight-update and throughput benchmarks.
    "100m": Preset(768, 12, 12, 2, 3072, 1024),
    # ~10M parameters, the middle rung of bench/bench_scale.py's ladder (head size 64).
    "10m": Preset(256, 10, 4, 2, 1024, 1024),
    # ~210M parameters, for bench_scale.py --sizes only (roughly 6 GB of learner memory in fp32).
    "200m": Preset(1024, 14, 16, 2, 4096, 1024),
}


def byte_to_symbol() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map that byte-level BPE vocabularies
    use (a space is "Ġ", a newline "Ċ"; printable ASCII maps to itself)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in symbols:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return symbols


def vocabulary() -> dict[str, int]:
    """Token -> id: the special tokens, the newline and printable ASCII, then every
    other byte value."""
    symbols = byte_to_symbol()
    byte_order = [*CHARACTER_BYTES, *(byte for byte in range(256) if byte not in CHARACTER_BYTES)]
    tokens = [*SPECIAL_TOKENS, *(symbols[byte] for byte in byte_order)]
    return {token: index for index, token in enumerate(tokens)}


def build_tokenizer():
    """The character-level tokenizer (a transformers Qwen2Tokenizer, i.e. a
    PreTrainedTokenizerFast over a `tokenizers` byte-level BPE without merges), with the
    ChatML chat template and the pad / eos tokens set."""
    from transformers import Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer(
        vocab=vocabulary(),
        merges=[],
        unk_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[IM_START_TOKEN],
        clean_up_tokenization_spaces=False,
        model_max_length=max(preset.max_position_embeddings for preset in PRESETS.values()),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def model_config(preset: str = "tiny", vocab_size: int | None = None):
    """The Qwen2Config of a preset (float32, tied embeddings, eos = <|im_end|>)."""
    from transformers import Qwen2Config

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    sizes = PRESETS[preset]
    vocab = vocabulary()
    return Qwen2Config(
        vocab_size=vocab_size or len(vocab),
        hidden_size=sizes.hidden_size,
        num_hidden_layers=sizes.num_hidden_layers,
        num_attention_heads=sizes.num_attention_heads,
        num_key_value_heads=sizes.num_key_value_heads,
        intermediate_size=sizes.intermediate_size,
        max_position_embeddings=sizes.max_position_embeddings,
        tie_word_embeddings=True,
        torch_dtype="float32",
        bos_token_id=None,
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[PAD_TOKEN],
        architectures=["Qwen2ForCausalLM"],
    )


def build_model(out_dir: str | pathlib.Path, preset: str = "tiny", seed: int = 0) -> pathlib.Path:
    """Write a randomly initialised model directory for `preset` to `out_dir`
    (config, generation config, model.safetensors, tokenizer, chat template) and
    return its path. The same seed gives the same weights."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = model_config(preset, vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, bos_token_id=None
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size [default: tiny]")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed [default: 0]")
    args = parser.parse_args(argv)
    out = build_model(args.out, args.preset, args.seed)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1:])
