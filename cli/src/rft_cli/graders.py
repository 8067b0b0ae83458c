"""`rft graders validate|run|register|list|get|delete|types` through the grader service.

`graders run` is our counterpart of OpenAI's graders run endpoint: score one sample, or
a JSONL file of (sample, item) pairs, with a spec and get per-line scores and a summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from google.protobuf import struct_pb2
from rft.grader.v1 import grader_pb2, grader_pb2_grpc

from rft_cli.common import add_command, add_group, grader
from rft_cli.inputs import SampleLine, parse_json_object, read_json_object, read_samples
from rft_cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    enum_name,
    fmt,
    print_fields,
    print_json,
    print_table,
    timestamp,
    to_dict,
)
from rft_cli.services import Connections, Stub

GRADE_BATCH = 256


def grader_stub(args: argparse.Namespace, conns: Connections) -> Stub:
    return grader(args, conns, grader_pb2_grpc.GraderServiceStub)


def to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def read_spec(path: str) -> struct_pb2.Struct:
    return to_struct(read_json_object(path, "grader spec"))


def sample_output(text: str, output_json: dict[str, Any] | None = None) -> grader_pb2.SampleOutput:
    """The grader's view of a sample; a text that is a JSON object is also given as output_json."""
    output = grader_pb2.SampleOutput(output_text=text)
    if output_json is None and text.strip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        output_json = parsed if isinstance(parsed, dict) else None
    if output_json is not None:
        output.output_json.update(output_json)
    return output


def is_pass(result: grader_pb2.GradeResult) -> bool:
    """A sample passes when the grader says so (its pass_threshold), as the learner counts it."""
    return not result.HasField("error") and result.passed


async def grade(
    stub: Stub,
    tenant: str,
    spec: struct_pb2.Struct | None,
    grader_id: str,
    pairs: Sequence[tuple[grader_pb2.SampleOutput, dict[str, Any]]],
    on_batch=None,
) -> tuple[list[grader_pb2.GradeResult], str, float]:
    """Results in order, the grader type, and the server's grading seconds (batched calls)."""
    results: list[grader_pb2.GradeResult] = []
    grader_type, seconds = "", 0.0
    for start in range(0, len(pairs), GRADE_BATCH):
        request = grader_pb2.GradeRequest(tenant=tenant)
        if spec is not None:
            request.spec.CopyFrom(spec)
        else:
            request.grader_id = grader_id
        for sample, item in pairs[start : start + GRADE_BATCH]:
            request.items.append(grader_pb2.GradeItem(sample=sample, item=to_struct(item)))
        response = await stub.Grade(request)
        results.extend(response.results)
        grader_type, seconds = response.grader_type, seconds + response.grade_seconds
        if on_batch is not None:
            on_batch(len(results))
    return results, grader_type, seconds


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarise(results: Sequence[grader_pb2.GradeResult]) -> dict[str, Any]:
    ok = [r for r in results if not r.HasField("error")]
    metric_names = sorted({k for r in ok for k in r.metrics})
    sub_names = sorted({k for r in ok for k in r.sub_scores})
    return {
        "count": len(results),
        "graded": len(ok),
        "errors": len(results) - len(ok),
        "mean_score": _mean([r.score for r in ok]),
        "pass_rate": _mean([1.0 if is_pass(r) else 0.0 for r in ok]),
        "metrics": {k: _mean([r.metrics[k] for r in ok if k in r.metrics]) for k in metric_names},
        "sub_scores": {k: _mean([r.sub_scores[k] for r in ok if k in r.sub_scores]) for k in sub_names},
    }


def _result_dict(line: int, result: grader_pb2.GradeResult) -> dict[str, Any]:
    out: dict[str, Any] = {"line": line}
    if result.HasField("error"):
        kind = enum_name(grader_pb2.GradeErrorKind, result.error.kind, "GRADE_ERROR_KIND_")
        out["error"] = {"kind": kind, "message": result.error.message}
        return out
    out.update(score=result.score, passed=is_pass(result))
    out.update(metrics=dict(result.metrics), sub_scores=dict(result.sub_scores))
    return out


def _json_safe(value: Any) -> Any:
    """NaN (a mean over nothing) becomes null, which every JSON parser accepts."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _samples(args: argparse.Namespace) -> list[SampleLine]:
    if args.file:
        if args.sample is not None or args.item is not None:
            raise CliError("give either --file SAMPLES.jsonl or --sample TEXT [--item JSON], not both")
        return read_samples(args.file)
    if args.sample is None:
        raise CliError("nothing to grade: give --sample TEXT [--item JSON] or --file SAMPLES.jsonl")
    item = parse_json_object(args.item, "--item") if args.item is not None else {}
    return [SampleLine(1, args.sample, None, item)]


def _grader_source(args: argparse.Namespace) -> struct_pb2.Struct | None:
    if bool(args.spec) == bool(args.grader_id):
        raise CliError("give a grader: SPEC.json or --grader-id ID (one of them)")
    return read_spec(args.spec) if args.spec else None


async def run(args: argparse.Namespace, conns: Connections) -> int:
    spec = _grader_source(args)
    samples = _samples(args)
    pairs = [(sample_output(s.output_text, s.output_json), s.item) for s in samples]
    show = len(pairs) > GRADE_BATCH and sys.stderr.isatty() and not args.json

    def on_batch(done: int) -> None:
        if show:
            print(f"\rgraded {done}/{len(pairs)}", end="" if done < len(pairs) else "\n", file=sys.stderr)

    results, grader_type, seconds = await grade(
        grader_stub(args, conns), args.tenant or "", spec, args.grader_id or "", pairs, on_batch
    )
    rows = [_result_dict(s.line, r) for s, r in zip(samples, results, strict=True)]
    summary = {**summarise(results), "grader_type": grader_type, "grade_seconds": seconds}
    if args.json:
        print_json(_json_safe({"results": rows, "summary": summary}))
    else:
        _print_run(rows, summary)
    return EXIT_FAILED if args.strict and summary["errors"] else EXIT_OK


def _print_run(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    extra = list(summary["metrics"]) + list(summary["sub_scores"])
    table = []
    for row in rows:
        cells: dict[str, object] = {"line": row["line"]}
        if "error" in row:
            cells["error"] = f"{row['error']['kind']}: {row['error']['message']}"
        else:
            cells.update(score=row["score"], passed="yes" if row["passed"] else "no", error="")
            cells.update({**row["sub_scores"], **row["metrics"]})
        table.append(cells)
    print_table(table, ["line", "score", "passed", *extra, "error"])
    print()
    means = "  ".join(f"{k} {fmt(v)}" for k, v in {**summary["metrics"], **summary["sub_scores"]}.items())
    print(
        f"{summary['count']} sample(s), {summary['graded']} graded, {summary['errors']} error(s); "
        f"mean score {fmt(summary['mean_score'])}, pass rate {fmt(summary['pass_rate'])}"
        + (f"; {means}" if means else "")
    )
    print(f"grader {summary['grader_type'] or '?'}: {summary['grade_seconds']:.3f}s on the server")


async def validate(args: argparse.Namespace, conns: Connections) -> int:
    spec = read_spec(args.spec)
    request = grader_pb2.ValidateGraderRequest(tenant=args.tenant or "", spec=spec)
    response = await grader_stub(args, conns).ValidateGrader(request)
    if args.json:
        print_json(response)
    elif response.valid:
        print(f"valid {response.grader_type or '?'} grader: {args.spec}")
    else:
        print(f"invalid grader spec {args.spec} ({len(response.issues)} problem(s)):")
        for issue in response.issues:
            print(f"  {issue.field + ': ' if issue.field else ''}{issue.message}")
    return EXIT_OK if response.valid else EXIT_FAILED


def _grader_row(g: grader_pb2.Grader) -> dict[str, object]:
    return {"id": g.id, "name": g.name, "type": g.type, "tenant": g.tenant, "created": timestamp(g.create_time)}


GRADER_COLUMNS = ["id", "name", "type", "tenant", "created"]


async def register_grader(args: argparse.Namespace, conns: Connections) -> int:
    request = grader_pb2.RegisterGraderRequest(tenant=args.tenant or "", name=args.name, spec=read_spec(args.spec))
    stored = (await grader_stub(args, conns).RegisterGrader(request)).grader
    if args.json:
        print_json({"grader": to_dict(stored)})
    else:
        print_table([_grader_row(stored)], GRADER_COLUMNS)
    return EXIT_OK


async def list_graders(args: argparse.Namespace, conns: Connections) -> int:
    request = grader_pb2.ListGradersRequest(tenant=args.tenant or "", page_size=args.limit)
    response = await grader_stub(args, conns).ListGraders(request)
    if args.json:
        print_json(response)
    else:
        print_table([_grader_row(g) for g in response.graders], GRADER_COLUMNS, empty="(no graders)")
    return EXIT_OK


async def get_grader(args: argparse.Namespace, conns: Connections) -> int:
    request = grader_pb2.GetGraderRequest(tenant=args.tenant or "", grader_id=args.grader_id)
    stored = (await grader_stub(args, conns).GetGrader(request)).grader
    if args.json:
        print_json({"grader": to_dict(stored)})
    else:
        row = _grader_row(stored)
        print_fields(row.items())
        print("spec:")
        print(json.dumps(to_dict(stored.spec), indent=2))
    return EXIT_OK


async def delete_grader(args: argparse.Namespace, conns: Connections) -> int:
    request = grader_pb2.DeleteGraderRequest(tenant=args.tenant or "", grader_id=args.grader_id)
    await grader_stub(args, conns).DeleteGrader(request)
    if args.json:
        print_json({"deleted": args.grader_id})
    else:
        print(f"deleted {args.grader_id}")
    return EXIT_OK


async def list_types(args: argparse.Namespace, conns: Connections) -> int:
    response = await grader_stub(args, conns).ListGraderTypes(grader_pb2.ListGraderTypesRequest())
    if args.json:
        print_json(response)
        return EXIT_OK
    rows = [
        {
            "type": t.name,
            "enabled": "yes" if t.enabled else "no",
            "openai": "yes" if t.openai_compatible else "no",
            "description": t.description,
        }
        for t in response.types
    ]
    print_table(rows, ["type", "enabled", "openai", "description"])
    return EXIT_OK


RUN_EPILOG = """\
examples:
  rft graders run grader.json --sample "4" --item '{"answer": "4"}'
  rft graders run grader.json --file samples.jsonl --json

Lines of SAMPLES.jsonl, any of:
  {"sample": "text", "item": {...}}
  {"sample": {"output_text": "...", "output_json": {...}}, "item": {...}}
  {"output_text": "...", ...}   (a dataset line plus the answer: the other fields but
                                 "messages" are the item)
A sample that fails to grade shows its error and does not count in the mean. Exit code 0
when grading ran (1 with --strict if any sample failed to grade)."""


def register(commands: argparse._SubParsersAction) -> None:
    actions = add_group(commands, "graders", "check and run grader specs, manage registered graders (grader)")

    def with_tenant(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--tenant", help="tenant (default: the server's 'default')")
        return parser

    sub = with_tenant(add_command(actions, "validate", validate, "check a spec and list every problem (exit 1 if any)"))
    sub.add_argument("spec", metavar="SPEC.json", help="grader spec in OpenAI's grader JSON format")
    sub = with_tenant(
        add_command(actions, "run", run, "score samples with a spec, like OpenAI's graders run", epilog=RUN_EPILOG)
    )
    sub.add_argument("spec", nargs="?", metavar="SPEC.json", help="grader spec (or --grader-id)")
    sub.add_argument("--grader-id", metavar="ID", help="a registered grader instead of SPEC.json")
    sub.add_argument("--sample", metavar="TEXT", help="one model answer to score")
    sub.add_argument("--item", metavar="JSON", help='the dataset item for --sample, e.g. \'{"answer": "4"}\'')
    sub.add_argument("--file", metavar="SAMPLES.jsonl", help="score every line of a JSONL file")
    sub.add_argument("--strict", action="store_true", help="exit 1 when any sample fails to grade")
    sub = with_tenant(add_command(actions, "register", register_grader, "validate a spec and store it under a name"))
    sub.add_argument("spec", metavar="SPEC.json", help="grader spec")
    sub.add_argument("--name", required=True, help="name, unique within the tenant")
    sub = with_tenant(add_command(actions, "list", list_graders, "list the tenant's registered graders"))
    sub.add_argument("--limit", type=int, default=50, help="how many to show (default %(default)s)")
    for name, handler, text in (
        ("get", get_grader, "show a registered grader and its spec"),
        ("delete", delete_grader, "delete a registered grader"),
    ):
        sub = with_tenant(add_command(actions, name, handler, text))
        sub.add_argument("grader_id", help="grader id")
    add_command(actions, "types", list_types, "list the grader types the service runs")
