"""Fixtures of the CLI tests: real learner and grader processes, `rft` run as a subprocess."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest
from service_process import ServiceProcess

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from cli_helpers import Cli  # noqa: E402


@pytest.fixture(scope="session")
def cli_learner(tmp_path_factory):
    # No rollout or grader behind it: the CLI tests exercise the API, not training.
    data = tmp_path_factory.mktemp("learner")
    args = ["--data-dir", str(data), "--rollout-addresses", "127.0.0.1:1", "--grader-address", "127.0.0.1:1"]
    with ServiceProcess("rft-learner", args) as proc:
        yield proc


@pytest.fixture(scope="session")
def cli_grader(tmp_path_factory):
    with ServiceProcess("rft-grader", ["--data-dir", str(tmp_path_factory.mktemp("grader"))]) as proc:
        yield proc


@pytest.fixture
def cli(cli_learner, cli_grader) -> Cli:
    return Cli(cli_learner.address, cli_grader.address)


@pytest.fixture(scope="session")
def minimal_model(tmp_path_factory) -> pathlib.Path:
    """A directory the learner's up-front model check accepts (config, tokenizer, safetensors)."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models

    directory = tmp_path_factory.mktemp("model") / "minimal"
    directory.mkdir()
    Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(str(directory / "tokenizer.json"))
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    config = {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "vocab_size": 2,
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }
    (directory / "config.json").write_text(json.dumps(config))
    save_file({"lm_head.weight": np.zeros((2, 8), dtype=np.float32)}, str(directory / "model.safetensors"))
    return directory
