"""The demo's shipped assets: examples/demo (task data, grader spec) and models/demo-base.

Fast checks (seconds, CPU): the files are valid RFT JSONL, the splits keep the promises
docs/demo-task.md makes (no validation problem in train or sft, in either operand
order), the generator still reproduces the shipped files, the grader spec parses and
every line has the item fields it references, and the shipped model loads in
transformers and answers some validation problems right.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "demo"
MODEL = REPO / "models" / "demo-base"
SPLITS = ("train", "valid", "sft")


def _script(name: str):
    """A module from scripts/ (they are scripts, not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _rows(split: str) -> list[dict]:
    with (DATA / f"{split}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _problems(rows: list[dict]) -> set[tuple[int, int]]:
    """Problems as unordered operand pairs: "47 + 38" and "38 + 47" are one problem."""
    return {(min(r["a"], r["b"]), max(r["a"], r["b"])) for r in rows}


@pytest.mark.parametrize("split", SPLITS)
def test_lines_are_rft_jsonl(split: str) -> None:
    rows = _rows(split)
    assert rows, f"{split}.jsonl is empty"
    for number, row in enumerate(rows, 1):
        messages = row["messages"]
        assert isinstance(messages, list) and messages, f"{split}.jsonl:{number}: messages must be a non-empty list"
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in messages)
        assert messages[-1]["role"] == "user", f"{split}.jsonl:{number}: the last message must be the user's"
        assert isinstance(row["answer"], str)
        assert row["answer"] == str(row["a"] + row["b"]), f"{split}.jsonl:{number}: wrong reference answer"
        assert f"{row['a']} + {row['b']}" in messages[-1]["content"]


def test_split_sizes_and_disjointness() -> None:
    train, valid, sft = (_rows(split) for split in SPLITS)
    assert len(train) >= 1000 and len(valid) >= 200
    assert len(_problems(train)) == len(train) and len(_problems(valid)) == len(valid), "duplicate problems"
    assert not _problems(valid) & _problems(train), "a validation problem is in train.jsonl"
    assert not _problems(valid) & _problems(sft), "a validation problem is in sft.jsonl"
    assert not _problems(train) & _problems(sft), "a train.jsonl problem is in sft.jsonl"


def test_generator_reproduces_shipped_files(tmp_path: pathlib.Path) -> None:
    _script("make_demo_data").main(["--out", str(tmp_path)])
    for name in (*(f"{split}.jsonl" for split in SPLITS), "grader.json"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), f"{name} differs from the generator's"


def test_grader_spec_parses_and_its_item_fields_exist() -> None:
    from rft_grader.domain import Sample
    from rft_grader.spec import parse_spec
    from rft_grader.templates import Template

    raw = json.loads((DATA / "grader.json").read_text(encoding="utf-8"))
    spec = parse_spec(raw)
    assert spec.type in ("string_check", "text_similarity", "multi"), "the demo grader must need no sandbox"
    templates = [value for value in raw.values() if isinstance(value, str) and "{{" in value]
    fields = {m.group(1) for text in templates for m in re.finditer(r"\{\{\s*item\.([^.\s}]+)", text)}
    assert fields, "the grader references no item field"
    for split in ("train", "valid"):
        for row in _rows(split):
            item = {k: v for k, v in row.items() if k != "messages"}
            assert fields <= item.keys()
            # The reference answer, given as the sample, renders both sides equal.
            sample = Sample(row["answer"])
            assert Template(raw["input"]).render(sample, item) == Template(raw["reference"]).render(sample, item)


def test_model_directory_is_small_and_complete() -> None:
    names = {p.name for p in MODEL.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert sum(p.stat().st_size for p in MODEL.iterdir()) <= 20 * 1024 * 1024
    config = json.loads((MODEL / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]


def test_model_answers_some_validation_problems() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pretrain = _script("pretrain_demo_model")
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    rows = _rows("valid")[:20]
    prompts, _ = pretrain.encode(tokenizer, rows)
    answers = pretrain.generate(model, tokenizer, prompts)
    right = sum(answer == row["answer"] for answer, row in zip(answers, rows, strict=True))
    # A loose floor: the base model is deliberately under-trained (about 30% on valid).
    assert right >= 1, f"greedy answers {answers[:5]}... got none of 20 right"
