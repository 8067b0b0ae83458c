"""Python tools inside the jail: which functions of a module are tools, their JSON Schema,
and a call's result as text.

Runs in the grading child after it has confined itself (standard library only). A tool
is a public (no leading "_") top-level function defined by the source itself under its
own name: not an imported one, not a lambda or alias. Its description is its docstring;
its arguments' JSON Schema comes from the signature: annotations map to JSON types
(str string, int integer, float number, bool boolean, list / tuple array, dict object,
None null, Optional / unions, Literal enums); a parameter without an annotation has no
type; one without a default is required. A default is shown when it is JSON that a JSON
Schema consumer can hold (numbers as doubles: no NaN, infinities or ints beyond a
double's range, nested at most MAX_DEFAULT_DEPTH deep); others are left out, and so are
such values of a Literal.
"""

from __future__ import annotations

import inspect
import json
import math
import types
import typing

TOOL_FILENAME = "<tools>"
MAX_TOOLS = 64
MAX_DEFAULT_DEPTH = 8
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
_NAMED = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "None": "null",
    "NoneType": "null",
    "list": "array",
    "tuple": "array",
    "dict": "object",
}


def tool_functions(namespace: dict) -> dict:
    """The module's tools, name -> function, in definition order."""
    found = {}
    for name, value in list(namespace.items()):
        if (
            isinstance(value, types.FunctionType)
            and not name.startswith("_")
            and set(name) <= _NAME_CHARS
            and value.__name__ == name
            and value.__code__.co_filename == TOOL_FILENAME
        ):
            found[name] = value
    return found


def _schema(annotation: object, depth: int = 0) -> dict:
    """JSON Schema of one annotation; {} (any value) for what has no JSON equivalent."""
    if annotation is inspect.Parameter.empty or annotation is typing.Any or depth > 8:
        return {}
    if isinstance(annotation, str):  # `from __future__ import annotations` left it unevaluated
        name = annotation.strip()
        return {"type": _NAMED[name]} if name in _NAMED else {}
    if annotation is None:
        return {"type": "null"}
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset):
        schema: dict = {"type": "array"}
        items = [a for a in args if a is not Ellipsis]
        if origin is list and items or origin in (set, frozenset) and items:
            schema["items"] = _schema(items[0], depth + 1)
        elif origin is tuple and len(set(map(repr, items))) == 1:
            schema["items"] = _schema(items[0], depth + 1)
        return schema
    if annotation is dict or origin is dict:
        schema = {"type": "object"}
        if len(args) == 2 and (value := _schema(args[1], depth + 1)):
            schema["additionalProperties"] = value
        return schema
    if origin is typing.Literal:
        values = [a for a in args if (isinstance(a, (str, int, float, bool)) or a is None) and _is_json(a)]
        return {"enum": values} if values else {}
    if origin is typing.Union or (hasattr(types, "UnionType") and isinstance(annotation, types.UnionType)):
        options = [_schema(a, depth + 1) for a in args]
        if any(not option for option in options):
            return {}
        if all(set(option) == {"type"} for option in options):
            kinds = []
            for option in options:
                if option["type"] not in kinds:
                    kinds.append(option["type"])
            return {"type": kinds[0] if len(kinds) == 1 else kinds}
        return {"anyOf": options}
    return {}


def _is_json(value: object, depth: int = 0) -> bool:
    """Whether `value` is JSON data whose numbers are finite doubles (what a protobuf Struct,
    and most JSON Schema consumers, can hold)."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, float)):
        try:
            return math.isfinite(float(value))
        except OverflowError:  # an int beyond a double's range
            return False
    if depth >= MAX_DEFAULT_DEPTH:
        return False
    if isinstance(value, (list, tuple)):
        return all(_is_json(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_json(item, depth + 1) for key, item in value.items())
    return False


def _json_default(value: object) -> object:
    """A parameter's default as JSON, or None when it has none that JSON can hold."""
    try:
        return value if _is_json(value) else None
    except (TypeError, ValueError, RecursionError):  # an object that misbehaves (a dict subclass, ...)
        return None


def parameters_schema(function: types.FunctionType) -> dict:
    """The JSON Schema (type "object") of a tool's keyword arguments."""
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # an annotation that does not evaluate: use what is written
        hints = {}
    properties: dict = {}
    required = []
    extra = False
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = True
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            continue  # a call passes keywords only
        try:
            schema = _schema(hints.get(name, parameter.annotation))
        except Exception:  # an annotation that is no type at all (an unhashable object, ...)
            schema = {}
        if parameter.default is inspect.Parameter.empty:
            required.append(name)
        elif (default := _json_default(parameter.default)) is not None:
            schema["default"] = default
        properties[name] = schema
    result: dict = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    if not extra:
        result["additionalProperties"] = False
    return result


def describe_tools(namespace: dict) -> list:
    """Every tool as {"name", "description", "parameters"} (OpenAI's function format)."""
    tools = []
    for name, function in list(tool_functions(namespace).items())[:MAX_TOOLS]:
        tools.append(
            {"name": name, "description": inspect.getdoc(function) or "", "parameters": parameters_schema(function)}
        )
    return tools


def result_text(value: object) -> str:
    """A tool's return value as the model reads it: a str as is, anything else as JSON
    (values JSON cannot hold as their str())."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
