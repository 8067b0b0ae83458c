"""OpenAI grader templates: `{{item.answer}}`, `{{ item.a.b }}`, `{{sample.output_text}}`,
`{{sample.output_json.field}}`.

A template is compiled once per spec into literal text and references; rendering a
reference that the sample or item lacks raises TemplateError, which becomes a
per-sample error of kind TEMPLATE (never an empty string).

Values render as: strings as they are; whole-number floats without ".0" (protobuf
Struct carries every number as a double, so an item's `4` arrives as 4.0); other
numbers with repr; true / false / null as in JSON; objects and lists as compact JSON.
A path segment of digits indexes a list (`{{item.genes.0}}`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from rft_grader.domain import Sample

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
_REFERENCE = re.compile(r"^(item|sample)((?:\.[^.\s{}]+)+)$")
_SAMPLE_FIELDS = ("output_text", "output_json")


class TemplateError(Exception):
    """A template names a field the sample or item does not have."""


def template_problems(text: str) -> list[str]:
    """Syntax problems of a template string (empty when it is fine)."""
    problems = []
    for match in _PLACEHOLDER.finditer(text):
        ref = match.group(1).strip()
        parsed = _REFERENCE.match(ref)
        if parsed is None:
            problems.append(
                f"template {match.group(0)!r} must be {{{{item.<field>}}}} or {{{{sample.<field>}}}} "
                "(namespaces: item, sample; nested fields with dots)"
            )
            continue
        namespace, path = parsed.group(1), parsed.group(2)[1:].split(".")
        if namespace == "sample" and path[0] not in _SAMPLE_FIELDS:
            problems.append(f"template {match.group(0)!r}: sample has only output_text and output_json")
        elif namespace == "sample" and path[0] == "output_text" and len(path) > 1:
            problems.append(f"template {match.group(0)!r}: sample.output_text is a string and has no fields")
    if "{{" in _PLACEHOLDER.sub("", text):
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


def _lookup(root: Any, namespace: str, path: list[str]) -> Any:
    value = root
    walked = namespace
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise TemplateError(f"{{{{{walked}.{key}}}}}: {walked} has no field {key!r}")
        walked = f"{walked}.{key}"
    return value


class Template:
    """A compiled template string; `render` fills it for one (sample, item)."""

    __slots__ = ("parts", "single")

    def __init__(self, text: str) -> None:
        # parts: literal strings and (namespace, path) references, in order.
        self.parts: list[str | tuple[str, list[str]]] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            parsed = _REFERENCE.match(match.group(1).strip())
            if parsed is None:
                continue  # left as literal text; validation reports it
            if match.start() > position:
                self.parts.append(text[position : match.start()])
            self.parts.append((parsed.group(1), parsed.group(2)[1:].split(".")))
            position = match.end()
        if position < len(text) or not self.parts:
            self.parts.append(text[position:])
        # A template that is exactly one reference can yield the raw JSON value.
        self.single = len(self.parts) == 1 and isinstance(self.parts[0], tuple)

    def value(self, sample: Sample, item: dict[str, Any]) -> Any:
        """The referenced JSON value when the template is one reference, else the rendered string."""
        if self.single:
            return _resolve(self.parts[0], sample, item)
        return self.render(sample, item)

    def render(self, sample: Sample, item: dict[str, Any]) -> str:
        out = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else format_value(_resolve(part, sample, item)))
        return "".join(out)


def _resolve(ref: tuple[str, list[str]], sample: Sample, item: dict[str, Any]) -> Any:
    namespace, path = ref
    if namespace == "item":
        return _lookup(item, "item", path)
    head, rest = path[0], path[1:]
    if head == "output_text":
        return sample.output_text
    output_json = sample.output_json
    if output_json is None:
        raise TemplateError(
            "{{sample.output_json...}}: the sample has no output_json (the answer is not a JSON object)"
        )
    return _lookup(output_json, "sample.output_json", rest)
