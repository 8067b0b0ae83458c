"""Graders see an episode's tool calls and messages: {{sample.output_tools}},
{{sample.output_messages}} in templates, and sample["output_tools"] /
sample["output_messages"] in python graders (the real grader process)."""

from __future__ import annotations

import json

import pytest
from graderlib import require, scores
from rft.grader.v1 import grader_pb2

CALL = {
    "id": "call_0",
    "type": "function",
    "function": {"name": "add", "arguments": '{"a": 17, "b": 25}'},
    "output": "42",
    "is_error": False,
}
MESSAGES = [
    {"role": "assistant", "content": "", "tool_calls": ["call_0"]},
    {"role": "tool", "content": "42", "tool_call_id": "call_0"},
    {"role": "assistant", "content": "42", "tool_calls": []},
]


def request(spec, samples, tenant=""):
    out = grader_pb2.GradeRequest(tenant=tenant)
    out.spec.update(spec)
    for text, tools, messages, item in samples:
        added = out.items.add()
        added.sample.output_text = text
        added.sample.output_tools.extend(tools)
        added.sample.output_messages.extend(messages)
        added.item.update(item)
    return out


def test_templates_read_tool_calls_and_messages(stub) -> None:
    by_name = {
        "type": "string_check",
        "name": "called",
        "input": "{{sample.output_tools.0.function.name}}",
        "reference": "{{item.tool}}",
        "operation": "eq",
    }
    samples = [("42", [CALL], MESSAGES, {"tool": "add"}), ("42", [CALL], MESSAGES, {"tool": "mul"})]
    assert scores(stub.Grade(request(by_name, samples), timeout=60)) == [1.0, 0.0]
    # The whole list renders as JSON; a tool message's content is reachable by index.
    whole = dict(by_name, input="{{sample.output_tools}}", reference='"output":"42"', operation="like")
    assert scores(stub.Grade(request(whole, samples[:1]), timeout=60)) == [1.0]
    tool_message = dict(by_name, input="{{sample.output_messages.1.content}}", reference="42")
    assert scores(stub.Grade(request(tool_message, samples[:1]), timeout=60)) == [1.0]
    # No tool calls: the reference is a per-sample template error, not a crash.
    response = stub.Grade(request(by_name, [("42", [], [], {"tool": "add"})]), timeout=60)
    assert response.results[0].HasField("error") and "output_tools" in response.results[0].error.message


def test_validation_accepts_the_new_fields_only(stub) -> None:
    spec = {
        "type": "string_check",
        "name": "x",
        "input": "{{sample.output_calls}}",
        "reference": "a",
        "operation": "eq",
    }
    response = stub.ValidateGrader(grader_pb2.ValidateGraderRequest(spec=_struct(spec)), timeout=30)
    assert any("output_tools" in issue.message for issue in response.issues)
    spec["input"] = "{{sample.output_messages}}"
    assert not stub.ValidateGrader(grader_pb2.ValidateGraderRequest(spec=_struct(spec)), timeout=30).issues


@pytest.mark.python_grader
def test_python_grader_rewards_the_right_answer_reached_with_the_right_call(stub) -> None:
    require(stub, "python")
    source = (
        "import json\n"
        "def grade(sample, item):\n"
        "    calls = [c for c in sample['output_tools'] if not c['is_error']]\n"
        "    used = any(c['function']['name'] == 'add' and json.loads(c['function']['arguments']) == item['args']\n"
        "               for c in calls)\n"
        "    right = sample['output_text'].strip() == item['answer']\n"
        "    roles = [m['role'] for m in sample['output_messages']]\n"
        "    return (0.5 * right + 0.5 * used) if roles[:1] == ['assistant'] or not roles else 0.0\n"
    )
    spec = {"type": "python", "name": "py", "source": source}
    item = {"answer": "42", "args": {"a": 17, "b": 25}}
    failed = dict(CALL, is_error=True, output="error: timed out")
    samples = [
        ("42", [CALL], MESSAGES, item),  # right answer, right call
        ("42", [], [], item),  # right answer, no call
        ("42", [failed], MESSAGES, item),  # the call failed
        ("41", [CALL], MESSAGES, item),  # right call, wrong answer
    ]
    response = stub.Grade(request(spec, samples, tenant="episode-tenant"), timeout=120)
    assert scores(response) == [1.0, 0.5, 0.5, 0.5]


def _struct(value):
    from google.protobuf import struct_pb2

    out = struct_pb2.Struct()
    out.update(json.loads(json.dumps(value)))
    return out
