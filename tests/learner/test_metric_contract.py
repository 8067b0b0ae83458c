"""Metric names are a public contract: one list (rl_step.METRIC_NAMES), repeated in the
proto that clients read and in docs/learner.md."""

from __future__ import annotations

import pathlib
import re

from rft_learner.trainer.rl_step import METRIC_NAMES, metric_is_documented

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_every_metric_name_is_in_the_proto_and_the_docs() -> None:
    proto = (REPO / "protos/rft/learner/v1/fine_tuning.proto").read_text()
    point = re.search(r"message MetricsPoint \{(.*?)\n\}", proto, re.S).group(1)
    documented = set(re.findall(r"[\w@]+", " ".join(line.strip("/ ") for line in point.splitlines())))
    docs = (REPO / "docs/learner.md").read_text()
    for name in METRIC_NAMES:
        assert name in documented, f"{name} is not listed in MetricsPoint's comment"
        assert f"| `{name}` |" in docs, f"{name} has no row in docs/learner.md"


def test_families_stand_for_their_members_and_nothing_else_passes() -> None:
    assert metric_is_documented("pass@8") and metric_is_documented("top@max")
    assert not metric_is_documented("clip_frac") and not metric_is_documented("bogus@1")
