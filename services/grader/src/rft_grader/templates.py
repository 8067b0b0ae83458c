"""OpenAI grader templates: `{{item.answer}}`, `{{ item.a.b }}`, `{{sample.output_text}}`,
`{{sample.output_json.field}}`.

A template is compiled once per spec into literal text and references; rendering a
reference that the sample or item lacks raises TemplateError, which becomes a
per-sample error of kind TEMPLATE (never an empty string).

Values render as: strings as they are; whole-number floats without ".0" (protobuf
Struct carries every number as a double, so an item's `4` arrives as 4.0); other
numbers with repr; true / false / null as in JSON; objects and lists as compact JSON.
A path segment of digits indexes a list (`{{item.genes.0}}`).

Templates are scanned in one left-to-right pass (str.find, no backtracking regex): a
megabyte of "{{" is as quick to check as any other megabyte. `render` stops as soon as
its output passes the caller's limit (RenderTooLarge), so 20k references to a 1 MB
field cost a few megabytes, not 20 GB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from rft_grader.domain import Sample
from rft_grader.limits import EXCERPT_CHARS, clip, excerpt

# Linear: the segments are separated by dots that no segment contains.
_REFERENCE = re.compile(r"^(item|sample)((?:\.[^.\s{}]+)+)$")
_SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "output_messages")
MAX_LISTED_PROBLEMS = 10
"""Problems listed per template string; the rest are counted."""


class TemplateError(Exception):
    """A template names a field the sample or item does not have."""


class RenderTooLarge(Exception):
    """Rendering would pass the caller's limit; nothing past it was built."""


def placeholders(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, inside) of every `{{...}}`, left to right: what the regex
    `\\{\\{(.*?)\\}\\}` finds, in one pass. Once a `{{` has no `}}` after it, no later
    one has either, so the scan stops there."""
    position = 0
    while (start := text.find("{{", position)) != -1:
        end = text.find("}}", start + 2)
        if end == -1:
            return
        yield start, end + 2, text[start + 2 : end]
        position = end + 2


def _unclosed(text: str) -> bool:
    last = 0
    for _, end, _ in placeholders(text):
        last = end
    return text.find("{{", last) != -1


def template_problems(text: str) -> list[str]:
    """Syntax problems of a template string (empty when it is fine)."""
    problems = []
    for start, end, inside in placeholders(text):
        shown = excerpt(text[start:end])
        parsed = _REFERENCE.match(inside.strip())
        if parsed is None:
            problems.append(
                f"template {shown} must be {{{{item.<field>}}}} or {{{{sample.<field>}}}} "
                "(namespaces: item, sample; nested fields with dots)"
            )
            continue
        namespace, path = parsed.group(1), parsed.group(2)[1:].split(".")
        if namespace == "sample" and path[0] not in _SAMPLE_FIELDS:
            problems.append(f"template {shown}: sample has only {', '.join(_SAMPLE_FIELDS)}")
        elif namespace == "sample" and path[0] == "output_text" and len(path) > 1:
            problems.append(f"template {shown}: sample.output_text is a string and has no fields")
    if len(problems) > MAX_LISTED_PROBLEMS:
        more = len(problems) - MAX_LISTED_PROBLEMS
        problems = [*problems[:MAX_LISTED_PROBLEMS], f"… and {more} more template problems like these"]
    if _unclosed(text):
        problems.append("template has '{{' without a closing '}}'")
    return problems


def format_value(value: Any) -> str:
    """How a JSON value appears inside a rendered template."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _index(key: str) -> int | None:
    """A list index written in ASCII digits ('²' is a digit to isdigit(), not to int())."""
    return int(key) if key.isascii() and key.isdigit() and len(key) < 19 else None


def _lookup(root: Any, namespace: str, path: list[str]) -> Any:
    value = root
    for depth, key in enumerate(path):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and (index := _index(key)) is not None and index < len(value):
            value = value[index]
        else:
            walked = ".".join([namespace, *path[:depth]])
            shown = clip(f"{walked}.{key}", EXCERPT_CHARS)
            raise TemplateError(f"{{{{{shown}}}}}: {clip(walked, EXCERPT_CHARS)} has no field {excerpt(key)}")
    return value


class Template:
    """A compiled template string; `render` fills it for one (sample, item)."""

    __slots__ = ("parts", "single")

    def __init__(self, text: str) -> None:
        # parts: literal strings and (namespace, path) references, in order.
        self.parts: list[str | tuple[str, list[str]]] = []
        position = 0
        for start, end, inside in placeholders(text):
            parsed = _REFERENCE.match(inside.strip())
            if parsed is None:
                continue  # left as literal text; validation reports it
            if start > position:
                self.parts.append(text[position:start])
            self.parts.append((parsed.group(1), parsed.group(2)[1:].split(".")))
            position = end
        if position < len(text) or not self.parts:
            self.parts.append(text[position:])
        # A template that is exactly one reference can yield the raw JSON value.
        self.single = len(self.parts) == 1 and isinstance(self.parts[0], tuple)

    def value(self, sample: Sample, item: dict[str, Any]) -> Any:
        """The referenced JSON value when the template is one reference, else the rendered string."""
        if self.single:
            return _resolve(self.parts[0], sample, item)
        return self.render(sample, item)

    def render(self, sample: Sample, item: dict[str, Any], limit: int | None = None) -> str:
        """The filled-in text; RenderTooLarge as soon as it would pass `limit` characters."""
        out = []
        size = 0
        for part in self.parts:
            text = part if isinstance(part, str) else format_value(_resolve(part, sample, item))
            size += len(text)
            if limit is not None and size > limit:
                raise RenderTooLarge(limit)
            out.append(text)
        return "".join(out)


def _resolve(ref: tuple[str, list[str]], sample: Sample, item: dict[str, Any]) -> Any:
    namespace, path = ref
    if namespace == "item":
        return _lookup(item, "item", path)
    head, rest = path[0], path[1:]
    if head == "output_text":
        return sample.output_text
    if head in ("output_tools", "output_messages"):
        return _lookup(getattr(sample, head), f"sample.{head}", rest)
    output_json = sample.output_json
    if output_json is None:
        raise TemplateError(
            "{{sample.output_json...}}: the sample has no output_json (the answer is not a JSON object)"
        )
    return _lookup(output_json, "sample.output_json", rest)
