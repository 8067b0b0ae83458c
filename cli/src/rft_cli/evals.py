"""`rft evals run`: score several models on one validation file and grader, side by side.

For each model a temporary rollout service is started (or --rollout names a running
one), every prompt gets K sampled answers and one greedy answer, the grader service
scores them, and the metrics match the learner's validation metrics (reward mean,
pass@1 and pass@K from the K samples, greedy pass@1, top@k from ranked-list graders).

With --max-turns / --tool-servers every answer is a tool-using episode, run by the
rollout service exactly as a job's validation runs it (rft_common.episodes: the same
EpisodeParams, the grader sees the final answer as output_text plus output_tools and
output_messages), and the episode metrics are reported beside the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from rft.common.v1 import common_pb2
from rft.grader.v1 import grader_pb2
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_common.episodes import EPISODE_METRICS, episode_ends, episode_metrics, episode_params, episode_sample_output

from rft_cli import graders
from rft_cli.common import add_command, add_group
from rft_cli.inputs import Example, read_dataset, read_json_object
from rft_cli.output import EXIT_FAILED, EXIT_OK, CliError, fmt, metric_sort_key, print_json, print_table
from rft_cli.rollout_process import RolloutProcess, default_rollout_command
from rft_cli.services import Connections, Stub, rollout_endpoint

PROMPTS_PER_REQUEST = 64
PYTHON_TOOLS_SERVER = "python-tools"
"""Name of the grader_python tool server added for --python-tools."""
MAX_PYTHON_TOOLS_CHARS = 65_536
"""As a job's python_tools (rft_learner.hparams)."""
CONCURRENT_REQUESTS = 4


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def eval_metrics(
    sampled: Sequence[Sequence[grader_pb2.GradeResult]], greedy: Sequence[grader_pb2.GradeResult], k: int
) -> dict[str, float]:
    """Metrics over prompts: `sampled[i]` holds prompt i's K results, `greedy[i]` its greedy one."""
    flat = [r for group in sampled for r in group if not r.HasField("error")]
    greedy_ok = [r for r in greedy if not r.HasField("error")]
    correct = [sum(1 for r in group if graders.is_pass(r)) for group in sampled]
    metrics = {
        "reward_mean": _mean([r.score for r in flat]),
        "greedy_reward_mean": _mean([r.score for r in greedy_ok]),
        "pass@1": _mean([pass_at_k(k, c, 1) for c in correct]),
        f"pass@{k}": _mean([pass_at_k(k, c, k) for c in correct]),
        "greedy_pass@1": _mean([1.0 if graders.is_pass(r) else 0.0 for r in greedy_ok]),
        "grader_errors": float(sum(len(g) for g in sampled) + len(greedy) - len(flat) - len(greedy_ok)),
    }
    for name in sorted({n for r in greedy_ok for n in r.metrics}):  # top@1, top@5, top@max, ...
        metrics[name] = _mean([r.metrics[name] for r in greedy_ok if name in r.metrics])
    return metrics


class Reporter:
    """Progress on stderr: a rich bar on a terminal, a line per phase otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = None

    def __enter__(self) -> Reporter:
        if self.enabled and sys.stderr.isatty():
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                return self
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def task(self, description: str, total: int, unit: str):
        """A callable advancing a bar by n; plain mode reports the phase once."""
        if self.progress is None:
            self.say(f"{description} {total} {unit}")
            return lambda n: None
        task_id = self.progress.add_task(description, total=total)
        return lambda n: self.progress.advance(task_id, n)


async def _generate(
    stub: Stub,
    examples: Sequence[Example],
    params: rollout_pb2.SamplingParams,
    batch: int,
    seed: int | None,
    advance,
    episode: rollout_pb2.EpisodeParams | None = None,
) -> list[list[rollout_pb2.Sample]]:
    """Samples per prompt, in order; requests of `batch` prompts, a few in flight."""
    limit = asyncio.Semaphore(CONCURRENT_REQUESTS)

    async def one(index: int, chunk: Sequence[Example]) -> list[list[rollout_pb2.Sample]]:
        request = rollout_pb2.GenerateRequest(sampling=params, request_id=f"rft-evals-{index}")
        if seed is not None:
            request.sampling.seed = seed + index
        if episode is not None:
            request.episode.CopyFrom(episode)
        for example in chunk:
            messages = [
                common_pb2.ChatMessage(role=m.get("role", "user"), content=m["content"]) for m in example.messages
            ]
            request.prompts.append(rollout_pb2.Prompt(chat=rollout_pb2.ChatPrompt(messages=messages)))
        async with limit:
            response = await stub.Generate(request)
        advance(len(chunk))
        return [list(result.samples) for result in response.results]

    chunks = [examples[i : i + batch] for i in range(0, len(examples), batch)]
    out: list[list[rollout_pb2.Sample]] = []
    for samples in await asyncio.gather(*(one(i, c) for i, c in enumerate(chunks))):
        out.extend(samples)
    return out


def _grader_sample(sample: rollout_pb2.Sample | None) -> grader_pb2.SampleOutput:
    """As the learner's validation grades it: an episode with its tool calls and messages."""
    if sample is None:
        return graders.sample_output("")
    if sample.HasField("episode"):
        return episode_sample_output(sample.text, sample.episode)
    return graders.sample_output(sample.text)


def _python_source(args: argparse.Namespace) -> str:
    return getattr(args, "python_tools_source", "")


def rollout_tool_servers(args: argparse.Namespace, conns: Connections, workdir: pathlib.Path) -> str:
    """The --tool-servers-file of a rollout this command starts ("" for none): the user's
    file, plus (with --python-tools, when the file has no grader_python server) a
    grader_python server that reaches this command's grader with its credentials. Written
    with owner-only permissions: it may hold the API key."""
    path = args.rollout_tool_servers_file
    if not _python_source(args):
        return str(pathlib.Path(path).resolve()) if path else ""
    servers = read_json_object(path, "tool servers file").get("servers", []) if path else []
    if not any(isinstance(s, dict) and s.get("kind") == "grader_python" for s in servers):
        # Only the tenant the episodes act for: the rollout listens on loopback without keys.
        tenant = args.tenant or "default"
        python = {
            "name": PYTHON_TOOLS_SERVER,
            "kind": "grader_python",
            "target": args.grader,
            "allowed_tenants": [tenant],
        }
        if conns.tls_ca:
            python["tls_ca_file"] = str(pathlib.Path(conns.tls_ca).resolve())
        if conns.token:
            python["headers"] = {"authorization": f"Bearer {conns.token}"}
        servers = [*servers, python]
    target = workdir / "tool-servers.json"
    with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump({"servers": servers}, out)
    return str(target)


def _check_episodes(args: argparse.Namespace, info: rollout_pb2.GetModelInfoResponse, where: str) -> None:
    """Refuse, before any generation, tool servers the rollout does not offer (to this
    tenant) and a --max-turns above its limit."""
    offered = [server.name for server in info.tool_servers]
    unknown = [name for name in args.tool_servers if name not in offered]
    if unknown:
        listing = ", ".join(offered) if offered else "none"
        hint = "" if offered or args.rollout else " (give the rollout a --rollout-tool-servers-file)"
        raise CliError(
            f"--tool-servers: unknown tool server{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"the rollout for {where} offers {listing}{hint}",
            EXIT_FAILED,
        )
    if _python_source(args) and not any(server.kind == "grader_python" for server in info.tool_servers):
        raise CliError(
            f"--python-tools: the rollout for {where} has no grader_python tool server for the tenant "
            "to run them with (see docs/agents.md)",
            EXIT_FAILED,
        )
    limit = info.limits.max_episode_turns
    if limit and args.max_turns > limit:
        raise CliError(
            f"--max-turns {args.max_turns} is above the rollout's limit of {limit} turns per episode "
            "(its --max-episode-turns)",
            EXIT_FAILED,
        )


async def evaluate_model(
    args: argparse.Namespace,
    conns: Connections,
    address: str,
    label: str,
    examples: Sequence[Example],
    spec,
    reporter: Reporter,
) -> dict[str, Any]:
    temporary = not args.rollout  # started by this command: plaintext on loopback
    stub = conns.stub(rollout_endpoint(address), rollout_pb2_grpc.RolloutServiceStub, plaintext=temporary)
    episode = episode_params(args.max_turns, args.tool_servers, args.tenant or "", _python_source(args))
    # With episodes, the tool servers listed are those the episodes' tenant may use.
    tenant = (args.tenant or "") if episode is not None else ""
    info = await stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(tenant=tenant))
    k = args.samples
    if info.limits.max_n and k > info.limits.max_n:
        raise CliError(f"--samples {k} is above the rollout's limit of {info.limits.max_n} samples per prompt")
    if episode is not None:
        _check_episodes(args, info, label)
    batch = min(PROMPTS_PER_REQUEST, info.limits.max_prompts or PROMPTS_PER_REQUEST)
    started = time.monotonic()
    sampling = rollout_pb2.SamplingParams(n=k, temperature=args.temperature, max_tokens=args.max_tokens)
    greedy_params = rollout_pb2.SamplingParams(n=1, temperature=0.0, max_tokens=args.max_tokens)
    advance = reporter.task(f"{label}: generating", 2 * len(examples), f"prompts ({k} samples, then 1 greedy)")
    sampled = await _generate(stub, examples, sampling, batch, args.seed, advance, episode)
    greedy = await _generate(stub, examples, greedy_params, batch, None, advance, episode)
    generate_seconds = time.monotonic() - started

    pairs = [(_grader_sample(s), e.item) for e, samples in zip(examples, sampled, strict=True) for s in samples]
    pairs += [
        (_grader_sample(samples[0] if samples else None), e.item) for e, samples in zip(examples, greedy, strict=True)
    ]
    advance = reporter.task(f"{label}: grading", len(pairs), "samples")
    done = [0]

    def on_batch(total: int) -> None:
        advance(total - done[0])
        done[0] = total

    grader_stub = graders.grader_stub(args, conns)
    results, _, _ = await graders.grade(grader_stub, args.tenant or "", spec, args.grader_id or "", pairs, on_batch)
    groups, position = [], 0
    for samples in sampled:
        groups.append(results[position : position + len(samples)])
        position += len(samples)
    metrics = eval_metrics(groups, results[position:], k)
    row: dict[str, Any] = {"model": label, "served_model": info.model, "metrics": metrics}
    if episode is not None:
        # Over the sampled episodes, as the learner's validation (valid_<name>).
        episodes = [s.episode for samples in sampled for s in samples if s.HasField("episode")]
        metrics.update(episode_metrics(episodes))
        row["episode_ends"] = episode_ends(episodes)
    metrics["generate_seconds"] = generate_seconds
    return row


async def _check_grader(args: argparse.Namespace, conns: Connections, spec) -> None:
    """Fail before any slow model start when the grader is unreachable or the spec is invalid."""
    stub = graders.grader_stub(args, conns)
    if spec is None:
        await stub.GetGrader(grader_pb2.GetGraderRequest(tenant=args.tenant or "", grader_id=args.grader_id))
        return
    response = await stub.ValidateGrader(grader_pb2.ValidateGraderRequest(tenant=args.tenant or "", spec=spec))
    if not response.valid:
        problems = "\n  ".join(f"{i.field + ': ' if i.field else ''}{i.message}" for i in response.issues)
        raise CliError(f"invalid grader spec {args.grader_spec}:\n  {problems}", EXIT_FAILED)


def _check_usage(args: argparse.Namespace) -> None:
    if bool(args.grader_spec) == bool(args.grader_id):
        raise CliError("give a grader: --grader-spec SPEC.json or --grader-id ID (one of them)")
    if args.rollout and len(args.models) > 1:
        raise CliError("--rollout serves one model: give at most one MODEL_DIR (its label) with it")
    if not args.rollout and not args.models:
        raise CliError("give one or more MODEL_DIR, or --rollout ADDRESS of a running rollout service")
    if args.samples < 1:
        raise CliError("--samples must be at least 1")
    if args.max_turns < 0:
        raise CliError("--max-turns must be at least 1 (0: single-turn answers)")
    if args.rollout and args.rollout_tool_servers_file:
        raise CliError("--rollout-tool-servers-file configures the rollout this command starts, not --rollout's")
    if args.rollout_tool_servers_file and not pathlib.Path(args.rollout_tool_servers_file).is_file():
        raise CliError(f"--rollout-tool-servers-file: no file {args.rollout_tool_servers_file}")
    if args.tool_servers and args.max_turns < 2:
        raise CliError("--tool-servers needs --max-turns 2 or more (a turn that calls a tool, one that answers)")
    if args.python_tools:
        try:
            args.python_tools_source = pathlib.Path(args.python_tools).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"--python-tools {args.python_tools}: cannot read it as UTF-8 text ({exc})") from None
        if args.max_turns < 2:
            raise CliError("--python-tools needs --max-turns 2 or more (a turn that calls a tool, one that answers)")
        if len(args.python_tools_source) > MAX_PYTHON_TOOLS_CHARS:
            raise CliError(
                f"--python-tools {args.python_tools}: {len(args.python_tools_source)} characters, above the "
                f"{MAX_PYTHON_TOOLS_CHARS} a job's python_tools may have"
            )
    if not args.rollout:
        for model in args.models:
            if not (pathlib.Path(model) / "config.json").is_file():
                raise CliError(f"{model}: not a Hugging Face model directory (no config.json)")


async def run(args: argparse.Namespace, conns: Connections) -> int:
    _check_usage(args)
    spec = graders.read_spec(args.grader_spec) if args.grader_spec else None
    examples = read_dataset(args.file)
    if args.limit:
        examples = examples[: args.limit]
    await _check_grader(args, conns, spec)
    rows = []
    with Reporter(enabled=not args.json or sys.stderr.isatty()) as reporter:
        if args.rollout:
            label = args.models[0] if args.models else ""
            row = await evaluate_model(args, conns, args.rollout, label or args.rollout, examples, spec, reporter)
            if not label:
                row["model"] = row["served_model"] or args.rollout
            rows.append(row)
        with tempfile.TemporaryDirectory(prefix="rft-evals-") as workdir:
            tools_file = "" if args.rollout else rollout_tool_servers(args, conns, pathlib.Path(workdir))
            for model in [] if args.rollout else args.models:
                reporter.say(f"starting a rollout service for {model} ...")
                rollout = RolloutProcess(
                    args.rollout_command,
                    str(pathlib.Path(model).resolve()),
                    args.rollout_args,
                    args.ready_timeout,
                    tool_servers_file=tools_file,
                )
                async with rollout as address:
                    rows.append(await evaluate_model(args, conns, address, model, examples, spec, reporter))
    _print_results(args, rows, len(examples))
    return EXIT_OK if all(r["metrics"]["grader_errors"] == 0 for r in rows) or not args.strict else EXIT_FAILED


def _print_results(args: argparse.Namespace, rows: list[dict[str, Any]], prompts: int) -> None:
    if args.json:
        clean = [{**r, "metrics": {k: (None if math.isnan(v) else v) for k, v in r["metrics"].items()}} for r in rows]
        report: dict[str, Any] = {"file": args.file, "prompts": prompts, "samples": args.samples, "models": clean}
        if args.max_turns or args.tool_servers or args.python_tools:
            report["max_turns"] = args.max_turns
            report["tool_servers"] = args.tool_servers
            report["python_tools"] = args.python_tools
        print_json(report)
        return
    k = args.samples
    first = ["reward_mean", "greedy_reward_mean", "pass@1", f"pass@{k}", "greedy_pass@1"]
    extra = sorted({n for r in rows for n in r["metrics"] if n.startswith("top@")}, key=metric_sort_key)
    tools = [n for n in EPISODE_METRICS if any(n in r["metrics"] for r in rows)]
    columns = ["model", *first, *extra, *tools, "grader_errors"]
    table = [{"model": r["model"], **{c: r["metrics"].get(c) for c in columns[1:]}} for r in rows]
    for row in table:
        row["grader_errors"] = int(row["grader_errors"])
    line = f"{prompts} prompts from {args.file}; {k} samples at temperature {fmt(args.temperature)} + 1 greedy each"
    if tools:
        servers = ", ".join(args.tool_servers) or "no tool servers"
        line += f"; episodes of up to {max(args.max_turns, 1)} turns with {servers}"
    print(line)
    print_table(table, columns)
    for r in rows:
        if "episode_ends" in r:
            ends = ", ".join(f"{name} {count}" for name, count in r["episode_ends"].items()) or "none"
            print(f"{r['model']}: sampled episodes ended by {ends}")


EPILOG = """\
example:
  rft evals run --file valid.jsonl --grader-spec grader.json models/base data/learner/models/ftjob-abc

Columns: reward_mean over the K samples, greedy_reward_mean, pass@1 and pass@K (unbiased,
from the K samples), greedy_pass@1, top@k (ranked-list graders, greedy answers), and
samples that failed to grade. Models are evaluated one after another; each gets its own
temporary `rft-rollout serve` on a free loopback port, stopped at the end.

Tool-using models: --max-turns N and --tool-servers NAME[,NAME] make every answer an
episode (as a job's validation with those hyperparameters); the temporary rollout gets
the tool servers from --rollout-tool-servers-file (the rollout's --tool-servers-file
format). Extra columns: episode_turns_mean, tool_calls_mean, tool_error_rate (over the
sampled episodes), and a line of episode end reasons per model:

  rft evals run --file valid.jsonl --grader-spec grader.json --max-turns 3 --tool-servers calc \\
      --rollout-tool-servers-file tool-servers.json models/tool-base"""


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give one or more tool server names, comma-separated")
    return names


def register(commands: argparse._SubParsersAction) -> None:
    actions = add_group(commands, "evals", "score models side by side on a validation file (rollout + grader)")
    sub = add_command(actions, "run", run, "score one or more models on the same prompts and grader", epilog=EPILOG)
    sub.add_argument("models", nargs="*", metavar="MODEL_DIR", help="Hugging Face model directories to compare")
    sub.add_argument("--file", required=True, metavar="VALID.jsonl", help="dataset in the RFT JSONL format")
    source = sub.add_mutually_exclusive_group()
    source.add_argument("--grader-spec", metavar="SPEC.json", help="grader spec")
    source.add_argument("--grader-id", metavar="ID", help="registered grader id")
    sub.add_argument(
        "--tenant", help="tenant of the grader and of the episodes' tool servers (default: the server's 'default')"
    )
    sub.add_argument("--samples", type=int, default=4, metavar="K", help="sampled answers per prompt (default 4)")
    sub.add_argument("--max-tokens", type=int, default=64, metavar="N", help="tokens per answer (default 64)")
    sub.add_argument("--temperature", type=float, default=1.0, metavar="T", help="sampling temperature (default 1.0)")
    sub.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    sub.add_argument("--limit", type=int, default=0, metavar="N", help="only the first N prompts (default all)")
    sub.add_argument("--strict", action="store_true", help="exit 1 when any sample failed to grade")
    episodes = sub.add_argument_group("tool-using episodes")
    episodes.add_argument(
        "--max-turns",
        type=int,
        default=0,
        metavar="N",
        help="run each answer as an episode of up to N model turns with tool calls in between "
        "(as a job's max_turns; default: single-turn answers); --max-tokens then bounds the whole episode",
    )
    episodes.add_argument(
        "--tool-servers",
        type=_names,
        default=[],
        metavar="NAME[,NAME]",
        help="tool servers the episodes may use, by the names the rollout lists (GetModelInfo) "
        "(as a job's tool_servers)",
    )
    episodes.add_argument(
        "--python-tools",
        default="",
        metavar="FILE.py",
        help="Python tool functions (as a job's python_tools): the file's public functions are the tools, run in "
        "the grader's sandbox for --tenant. A rollout this command starts reaches this command's grader for them "
        "(a grader_python tool server added to its tool servers file); a --rollout must have one",
    )
    rollout = sub.add_argument_group("rollout")
    rollout.add_argument("--rollout", metavar="HOST:PORT", help="use this running rollout service (one model)")
    rollout.add_argument(
        "--rollout-command",
        default=os.environ.get("RFT_ROLLOUT_COMMAND") or default_rollout_command(),
        metavar="CMD",
        help="command of the rollout service started per model [env RFT_ROLLOUT_COMMAND; default %(default)s]",
    )
    rollout.add_argument(
        "--rollout-args", default="", metavar="ARGS", help='extra flags for it, e.g. "--max-model-len 512"'
    )
    rollout.add_argument(
        "--rollout-tool-servers-file",
        metavar="PATH",
        default="",
        help='tool servers file (JSON, {"servers": [...]}) given to each rollout this command starts '
        "(its --tool-servers-file)",
    )
    rollout.add_argument(
        "--ready-timeout", type=float, default=900.0, metavar="S", help="seconds to wait for SERVING (default 900)"
    )
