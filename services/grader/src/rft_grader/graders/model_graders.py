"""score_model and label_model: ask a chat model, per sample.

Both render the templated `input` messages and POST them to an OpenAI-compatible
chat-completions endpoint (the server's --model-base-url, or the spec's `base_url`
when the server allows it), with `sampling_params` mapped to the request fields.

score_model reads the reply as a number: a JSON object {"result": x} (or {"score": x}),
possibly in a ```json block, or a bare number. No number, NaN, inf or a value outside
`range` is an INVALID_SCORE error; `passed` is score >= pass_threshold (or the top of
the range when unset).

label_model reads the reply as one of `labels`: {"label": "..."} or the bare label
(quotes and a final period ignored; case-insensitive when unambiguous). score is 1.0
when the label is in `passing_labels`, else 0.0; metric label_index is the label's
position in `labels`. A reply that names no label is INVALID_SCORE.

A failed call (connection, HTTP status, timeout, a reply past model_max_reply_bytes) is a
MODEL_CALL error.

Replies are read in linear time (str.find, no backtracking regex: "```" followed by a
megabyte of spaces used to take hours), large ones on a thread.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from rft_grader.domain import ErrorKind, Outcome, Pair
from rft_grader.graders.base import Grader, Runtime
from rft_grader.limits import excerpt, offload
from rft_grader.model_client import ModelCallError
from rft_grader.spec import LabelModelSpec, SamplingParams, ScoreModelSpec
from rft_grader.templates import Template

_SPACES = re.compile(r"\s*")  # one greedy class, nothing after it: never backtracks
_QUOTES = "\"'`"
_LISTED_LABELS = 10


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def fenced_blocks(text: str) -> list[str]:
    """Bodies of ``` / ```json blocks: what the regex ```(?:json)?\\s*(.*?)``` finds, in one
    pass. Once a fence has no closing one after it, no later fence has either."""
    bodies = []
    position = 0
    while (start := text.find("```", position)) != -1:
        body = start + 3
        if text.startswith("json", body):
            body += 4
        body = _SPACES.match(text, body).end()
        end = text.find("```", body)
        if end == -1:
            break
        bodies.append(text[body:end])
        position = end + 3
    return bodies


def braced(text: str) -> str | None:
    """From the first '{' to the last '}' (what the regex \\{.*\\} finds), or None."""
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if start != -1 and end > start else None


def parse_score(reply: str) -> float | None:
    """The score in a model's reply, or None when it has none."""
    text = reply.strip()
    candidates = [text, *fenced_blocks(text)]
    if (found := braced(text)) is not None:
        candidates.append(found)
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            for key in ("result", "score"):
                if (number := _number(value.get(key))) is not None:
                    return number
        elif (number := _number(value)) is not None:
            return number
    return None


def parse_label(reply: str, labels: list[str]) -> str | None:
    """The label a model's reply names, or None."""
    text = reply.strip()
    candidate = text
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        candidate = value["label"]
    elif isinstance(value, str):
        candidate = value
    candidate = candidate.strip().rstrip(".").strip().strip(_QUOTES).rstrip(".").strip()
    if candidate in labels:
        return candidate
    wanted = candidate.casefold()  # once: a long reply is not folded again for every label
    folded = [label for label in labels if label.casefold() == wanted]
    return folded[0] if len(folded) == 1 else None


def request_params(params: SamplingParams | None) -> dict[str, Any]:
    if params is None:
        return {}
    fields = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
        "max_completion_tokens": params.max_completions_tokens,
        "reasoning_effort": params.reasoning_effort,
    }
    return {key: value for key, value in fields.items() if value is not None}


class _ModelGrader(Grader):
    spec: ScoreModelSpec | LabelModelSpec

    def __init__(self, spec: ScoreModelSpec | LabelModelSpec, runtime: Runtime) -> None:
        super().__init__(spec, runtime)
        self.roles = [message.role for message in spec.input]
        self.fields = [(f"input.{i}.content", Template(message.text)) for i, message in enumerate(spec.input)]
        self.params = request_params(spec.sampling_params)

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        try:
            base_url = self.runtime.models.endpoint(self.spec.base_url)
        except ModelCallError as exc:
            return [Outcome.failed(ErrorKind.MODEL_CALL, str(exc)) for _ in pairs]
        prompts = await asyncio.to_thread(self.render_all, pairs, self.fields)
        return list(await asyncio.gather(*(self._one(base_url, prompt) for prompt in prompts)))

    async def _one(self, base_url: str, prompt: list[str] | Outcome) -> Outcome:
        if isinstance(prompt, Outcome):
            return prompt
        messages = [{"role": role, "content": text} for role, text in zip(self.roles, prompt, strict=True)]
        try:
            reply = await self.runtime.models.chat(base_url, self.spec.model, messages, self.params)
        except ModelCallError as exc:
            return Outcome.failed(ErrorKind.MODEL_CALL, str(exc))
        return await offload(len(reply), self.read, reply)

    def read(self, reply: str) -> Outcome:
        raise NotImplementedError


class ScoreModelGrader(_ModelGrader):
    spec: ScoreModelSpec

    def read(self, reply: str) -> Outcome:
        score = parse_score(reply)
        if score is None:
            return Outcome.failed(
                ErrorKind.INVALID_SCORE,
                f'the model\'s reply has no score (expected a number or {{"result": <number>}}): {excerpt(reply)}',
            )
        return Outcome(score=score, passed=self.passed(score))


class LabelModelGrader(_ModelGrader):
    spec: LabelModelSpec

    def read(self, reply: str) -> Outcome:
        label = parse_label(reply, self.spec.labels)
        if label is None:
            labels = self.spec.labels
            shown = ", ".join(excerpt(label, 40) for label in labels[:_LISTED_LABELS])
            more = f" and {len(labels) - _LISTED_LABELS} more" if len(labels) > _LISTED_LABELS else ""
            return Outcome.failed(
                ErrorKind.INVALID_SCORE,
                f"the model's reply names none of the labels ({shown}{more}): {excerpt(reply)}",
            )
        ok = label in self.spec.passing_labels
        return Outcome(
            score=1.0 if ok else 0.0, passed=ok, metrics={"label_index": float(self.spec.labels.index(label))}
        )
