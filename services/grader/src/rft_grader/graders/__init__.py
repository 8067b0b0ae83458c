"""One small class per grader type; `build_grader(spec, runtime)` picks it."""

from __future__ import annotations

from rft_grader.graders.base import Grader, Runtime
from rft_grader.graders.json_check import JsonCheckGrader
from rft_grader.graders.math_equivalence import MathEquivalenceGrader
from rft_grader.graders.model_graders import LabelModelGrader, ScoreModelGrader
from rft_grader.graders.multi import MultiGrader
from rft_grader.graders.python import PythonGrader
from rft_grader.graders.ranked_list import RankedListGrader
from rft_grader.graders.string_check import StringCheckGrader
from rft_grader.graders.text_similarity import TextSimilarityGrader
from rft_grader.spec import AnySpec, MultiSpec

GRADERS: dict[str, type[Grader]] = {
    "string_check": StringCheckGrader,
    "text_similarity": TextSimilarityGrader,
    "python": PythonGrader,
    "score_model": ScoreModelGrader,
    "label_model": LabelModelGrader,
    "math_equivalence": MathEquivalenceGrader,
    "ranked_list": RankedListGrader,
    "json_check": JsonCheckGrader,
}


def build_grader(spec: AnySpec, runtime: Runtime) -> Grader:
    if isinstance(spec, MultiSpec):
        return MultiGrader(spec, runtime, build_grader)
    return GRADERS[spec.type](spec, runtime)


__all__ = ["Grader", "Runtime", "build_grader"]
