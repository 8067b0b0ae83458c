"""The learner's flags for devices, precision, memory, sharding and weight sync (issue
#12) each have a docstring shown by `--help` and a line in docs/learner.md."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from rft_learner.config import LearnerConfig

REPO = pathlib.Path(__file__).resolve().parents[2]
SCALE_FLAGS = (
    "device", "precision", "micro_batch_tokens", "trainer_ranks", "trainer_sharding", "dist_backend",
    "weight_sync", "weight_sync_backend", "weight_sync_host", "weight_sync_port", "weight_sync_timeout_seconds",
)  # fmt: skip


def test_every_scale_flag_has_help_and_a_line_in_the_docs() -> None:
    docs = (REPO / "docs" / "learner.md").read_text()
    learner = pathlib.Path(sys.executable).parent / "rft-learner"
    help_text = subprocess.run([str(learner), "serve", "--help"], capture_output=True, text=True, check=True).stdout
    flat_help = " ".join(help_text.split())
    for name in SCALE_FLAGS:
        flag = "--" + name.replace("_", "-")
        docstring = LearnerConfig.model_fields[name].description or ""
        assert docstring, f"{name} has no docstring"
        assert f"{flag} VALUE" in flat_help, f"{flag} is not in --help"
        assert " ".join(docstring.split()[:4]) in flat_help, f"{flag}'s docstring is not in --help"
        assert f"`{flag}`" in docs, f"{flag} is not in docs/learner.md"
