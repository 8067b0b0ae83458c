"""CreateJob's checks: everything a job needs is checked before it is queued, and a
refusal names the field (model, files, hyperparameters, answer fields, the grader run on
a few real items, the rollout's tensors), so a job never fails at step 1 for bad input."""

from __future__ import annotations

import asyncio
import json
import math
import pathlib
import re
from collections.abc import Sequence

import pydantic
import torch
from rft.grader.v1 import grader_pb2
from rft.learner.v1 import files_pb2, fine_tuning_pb2
from rft_common import dtypes

from rft_learner import hparams
from rft_learner.files import FileNotFound, FileStore
from rft_learner.remote import GraderClient, RemoteError, stand_in_episode_sample
from rft_learner.trainer.devices import Placement
from rft_learner.trainer.loop import TrainerSettings, grader_client, rollout_pool
from rft_learner.trainer.rl_step import episode_params, job_tenant


class InvalidJob(Exception):
    """CreateJob input that cannot run; the message names the field."""


SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A job suffix becomes part of the exported model's directory name: nothing that walks paths."""


class JobValidator:
    """Checks CreateJob requests against the stored files and the live services."""

    def __init__(self, files: FileStore, settings: TrainerSettings, validate_remote: bool = True) -> None:
        self.files = files
        self.settings = settings
        self.validate_remote = validate_remote

    def resolve_auto(self, request: fine_tuning_pb2.CreateJobRequest) -> list[str]:
        """Fill the request's auto (unset) RL hyperparameters from the training file's size
        and the model's, in place, so the stored job shows and resumes with the values it
        runs with; returns the notes and warnings for the job's events."""
        if not request.method.HasField("reinforcement"):
            return []
        params = hparams.reinforcement_params(request.method.reinforcement)
        n_train = self.files.get(request.training_file).line_count
        n_params = sum(math.prod(shape) for shape in tensor_shapes(pathlib.Path(request.model)).values())
        try:
            resolved, notes = params.resolve_auto(n_train, n_params, bool(request.validation_file))
        except ValueError as exc:
            raise InvalidJob(f"method.reinforcement.hyperparameters: {exc}") from exc
        hyper = request.method.reinforcement.hyperparameters
        for name in hparams.AUTO_FIELDS:
            setattr(hyper, name, getattr(resolved, name))
        return notes

    async def validate(self, request: fine_tuning_pb2.CreateJobRequest, owner: str | None = None) -> None:
        """Raise InvalidJob naming the field; `owner` limits the files to that tenant's."""
        if request.suffix and not SUFFIX.fullmatch(request.suffix):
            raise InvalidJob(f"suffix: {request.suffix[:80]!r} is not 1-64 letters, digits, '_' or '-'")
        model_dir = pathlib.Path(request.model)
        if not request.model:
            raise InvalidJob("model: required (a Hugging Face model directory)")
        try:
            is_model = (model_dir / "config.json").is_file()
        except OSError:  # a name too long for the filesystem, say
            is_model = False
        if not is_model:
            raise InvalidJob(f"model: {request.model[:200]!r} is not a model directory (no config.json)")
        try:
            await asyncio.to_thread(check_model_dir, model_dir)
        except Exception as exc:  # noqa: BLE001 - any load failure is the user's to fix
            raise InvalidJob(f"model: {request.model!r} does not load: {exc}") from exc
        for field in ("training_file", "validation_file"):
            file_id = getattr(request, field)
            if not file_id:
                if field == "training_file":
                    raise InvalidJob("training_file: required")
                continue
            try:
                stored = self.files.get(file_id, owner)
            except FileNotFound as exc:
                raise InvalidJob(f"{field}: {exc}") from exc
            if stored.purpose != files_pb2.FILE_PURPOSE_FINE_TUNE:
                raise InvalidJob(f"{field}: file {file_id} has purpose {stored.purpose}, expected FINE_TUNE")
        params = method_params(request)
        if isinstance(params, hparams.SupervisedParams):
            await asyncio.to_thread(
                self._check_field, request.training_file, params.answer_field, "method.supervised.answer_field"
            )
            return
        if params.sft_answer_field:
            await asyncio.to_thread(
                self._check_field, request.training_file, params.sft_answer_field, "hyperparameters.sft_answer_field"
            )
        if self.validate_remote:
            await self._validate_remote(request, model_dir, params.lora_rank, params)

    def _check_field(self, file_id: str, field: str, where: str) -> None:
        with open(self.files.get(file_id).path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip() and field not in json.loads(line):
                    raise InvalidJob(f"{where}: line {number} of {file_id} has no field {field!r}")

    async def _validate_remote(
        self,
        request: fine_tuning_pb2.CreateJobRequest,
        model_dir: pathlib.Path,
        lora_rank: int,
        params: hparams.ReinforcementParams | None = None,
    ) -> None:
        episodic = params is not None and episode_params(params) is not None
        settings = self.settings
        grader_cfg = request.method.reinforcement.grader
        source = grader_cfg.WhichOneof("source")
        if source is None:
            raise InvalidJob("method.reinforcement.grader: give a spec or a grader_id")
        grader = grader_client(grader_cfg, settings, patience_seconds=10)
        try:
            try:
                problems = await grader.validate()
            except Exception as exc:  # noqa: BLE001
                raise InvalidJob(f"method.reinforcement.grader: {rpc_message(exc)}") from exc
            if problems:
                raise InvalidJob("method.reinforcement.grader: " + "; ".join(problems))
            # Run it on a few real items so a template naming a missing field fails now, not mid-job.
            from rft_learner.trainer.data import load_examples

            examples = load_examples(self.files.get(request.training_file).path)[:3]
            try:
                # An episode job's graders may read the tool calls: give them one.
                sample = stand_in_episode_sample() if episodic else ""
                results = await grader.grade([(sample, e.item) for e in examples])
            except Exception as exc:  # noqa: BLE001
                raise InvalidJob(f"method.reinforcement.grader: grading a sample failed: {rpc_message(exc)}") from exc
            for example_index, result in enumerate(results):
                if result.HasField("error") and result.error.kind == grader_pb2.GRADE_ERROR_KIND_TEMPLATE:
                    raise InvalidJob(
                        f"method.reinforcement.grader: on training line {example_index + 1}: {result.error.message}"
                    )
        finally:
            await grader.close()
        python_tools: list[str] = []
        if params is not None and params.python_tools:
            python_tools = await check_python_tools(settings, job_tenant(request), params.python_tools)
        try:
            pool = rollout_pool(settings, patience_seconds=10)
        except (OSError, ValueError) as exc:
            raise InvalidJob(f"rollout addresses {settings.rollout_addresses!r} do not resolve: {exc}") from exc
        try:
            try:
                infos = await pool.model_info(job_tenant(request) if episodic else "")
            except RemoteError as exc:
                raise InvalidJob(f"rollout service unreachable at {settings.rollout_addresses}: {exc}") from exc
            expected = await asyncio.to_thread(tensor_shapes, model_dir)
            if len({info.dtype for info in infos}) > 1:
                listing = ", ".join(f"{a} serves {i.dtype}" for a, i in zip(pool.addresses, infos, strict=True))
                raise InvalidJob(
                    f"the rollout replicas serve different dtypes ({listing}); start them with the same --dtype"
                )
            for address, info in zip(pool.addresses, infos, strict=True):
                if problem := served_dtype_problem(info.dtype, settings.placement):
                    raise InvalidJob(f"rollout {address}: {problem}")
                served = {t.name: tuple(t.shape) for t in info.tensors}
                # The file may omit tied weights (lm_head.weight) that the engine lists.
                unknown = sorted(set(expected) - set(served))[:3]
                differ = sorted(k for k in set(served) & set(expected) if served[k] != expected[k])[:3]
                if served and (unknown or differ):
                    raise InvalidJob(
                        f"model: its tensors do not match the model served by rollout {address} "
                        f"(unknown to it {unknown}, different shapes {differ}); start the rollout with the same "
                        "architecture"
                    )
                if episodic and params is not None:
                    check_episode_support(params, address, info, job_tenant(request), python_tools)
                if lora_rank > info.max_lora_rank:
                    raise InvalidJob(
                        f"method.reinforcement.hyperparameters.lora_rank: {lora_rank} is above the largest LoRA "
                        f"rank rollout {address} takes ({info.max_lora_rank}); start it with --max-lora-rank "
                        f"{lora_rank} or more"
                    )
        finally:
            await pool.close()


def check_episode_support(
    params: hparams.ReinforcementParams, address: str, info, tenant: str, python_tools: Sequence[str] = ()
) -> None:
    """InvalidJob unless rollout `address` (its GetModelInfoResponse `info`, asked for
    `tenant`: only the tool servers that tenant may use) offers every tool server the job
    names and as many turns as it asks for, and unless a tool of the job's Python tools
    (`python_tools`, their names) has the name of a tool of those servers (the rollout
    refuses every episode of such a job)."""
    field = "method.reinforcement.hyperparameters"
    offered = [server.name for server in info.tool_servers]
    unknown = [name for name in params.tool_servers if name not in offered]
    if unknown:
        # A server the tenant may not use reads as unknown: other tenants' servers stay unnamed.
        raise InvalidJob(
            f"{field}.tool_servers: rollout {address} offers tenant {tenant!r} no tool server {unknown}; "
            f"it may use {offered} (the rollout's --tool-servers-file, allowed_tenants)"
        )
    if params.python_tools and not any(server.kind == "grader_python" for server in info.tool_servers):
        raise InvalidJob(
            f"{field}.python_tools: rollout {address} offers tenant {tenant!r} no tool server of kind grader_python "
            "(the rollout's --tool-servers-file, allowed_tenants), so its Python tools could not run"
        )
    if params.max_turns > info.limits.max_episode_turns:
        raise InvalidJob(
            f"{field}.max_turns: {params.max_turns} is above rollout {address}'s limit "
            f"max_episode_turns={info.limits.max_episode_turns}"
        )
    servers = {server.name: server for server in info.tool_servers}
    clashes = [
        f"{tool!r} (tool server {name!r})"
        for tool in python_tools
        for name in params.tool_servers
        if name in servers and tool in servers[name].tools
    ]
    if clashes:
        raise InvalidJob(
            f"{field}.python_tools: {', '.join(clashes)}: a Python tool has the name of a tool of the job's "
            "tool_servers, and an episode's tool names must be unique; rename the function"
        )


async def check_python_tools(settings: TrainerSettings, tenant: str, source: str) -> list[str]:
    """The tool names of a job's Python tools, described by the learner's grader in the
    tenant's sandbox; InvalidJob when the source does not compile or import (the message
    names the line), defines no tool, or the grader cannot describe it."""
    import grpc

    field = "method.reinforcement.hyperparameters.python_tools"
    client = GraderClient(
        settings.grader_address,
        tenant,
        token=settings.grader_token,
        tls_ca_file=settings.tls_ca_file,
        patience_seconds=10,
    )
    try:
        names = await client.describe_python_tools(source)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            raise InvalidJob(f"{field}: {(exc.details() or '').removeprefix('source: ')}") from exc
        raise InvalidJob(
            f"{field}: the grader at {settings.grader_address} could not describe it: {rpc_message(exc)}"
        ) from exc
    finally:
        await client.close()
    if not names:
        raise InvalidJob(
            f"{field}: defines no tool; write public top-level functions (names not starting with '_') in the source"
        )
    return names


def method_params(request: fine_tuning_pb2.CreateJobRequest) -> hparams.SupervisedParams | hparams.ReinforcementParams:
    """A job's hyperparameters with defaults filled in, or InvalidJob naming the field."""
    kind = request.method.WhichOneof("method")
    if kind is None:
        raise InvalidJob("method: set either supervised or reinforcement")
    try:
        if kind == "supervised":
            params = hparams.supervised_params(request.method.supervised)
            if not params.answer_field:
                raise InvalidJob("method.supervised.answer_field: required")
            return params
        params = hparams.reinforcement_params(request.method.reinforcement)
    except pydantic.ValidationError as exc:
        raise InvalidJob(hparams.describe_validation_error(exc, f"method.{kind}.hyperparameters")) from exc
    if (params.python_tools or params.tool_servers) and params.max_turns < 2:
        # An episode runs the tool calls of every turn but its last: with one turn, none.
        given = "python_tools" if params.python_tools else "tool_servers"
        raise InvalidJob(
            f"method.reinforcement.hyperparameters.max_turns: {params.max_turns} with {given}, whose tools "
            "would never run (an episode's last turn ends it without running its tool calls); set max_turns 2 "
            "or more (a turn that calls a tool, one that answers)"
        )
    return params


def served_dtype_problem(served: str, placement: Placement) -> str | None:
    """Why the learner cannot send its weights in the dtype a rollout serves, if it cannot.
    Weights are cast on the wire, so any floating dtype works except float16 for bf16
    weights: float16's range is far smaller and large weights would overflow."""
    if served not in dtypes.FLOATING:
        return f"it serves {served}, which weights cannot be cast to; start it with --dtype bfloat16 or float32"
    if placement.weights_dtype == torch.bfloat16 and served == "float16":
        return (
            "it serves float16 but the learner trains bf16 weights (--precision bf16), which float16 "
            "cannot hold without overflow; start the rollout with --dtype bfloat16, or the learner with "
            "--precision bf16-mixed or fp32"
        )
    return None


ANSWER_FIELDS = ("answer", "reference", "reference_answer", "solution", "label", "target")


def answer_field(request: fine_tuning_pb2.CreateJobRequest) -> str:
    method = request.method
    if method.HasField("supervised"):
        return method.supervised.answer_field
    return method.reinforcement.hyperparameters.sft_answer_field


def overlap_warnings(train_path: str, valid_path: str, answer_field: str = "") -> list[str]:
    """Validation examples whose prompt, or whose reference answer, also appears in training."""

    def read(path: str) -> list[dict]:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def prompt(example: dict) -> str:
        return json.dumps(example["messages"], sort_keys=True)

    train, valid = read(train_path), read(valid_path)
    warnings = []
    seen_prompts = {prompt(e) for e in train}
    shared = sum(prompt(e) in seen_prompts for e in valid)
    if shared:
        warnings.append(f"{shared} of {len(valid)} validation examples have a prompt that is also in training")
    fields = [answer_field] if answer_field else [f for f in ANSWER_FIELDS if valid and f in valid[0]]
    for field in fields:
        seen = {json.dumps(e[field], sort_keys=True) for e in train if field in e}
        shared = sum(field in e and json.dumps(e[field], sort_keys=True) in seen for e in valid)
        if shared:
            warnings.append(
                f"{shared} of {len(valid)} validation examples have a reference answer ({field!r}) that also appears "
                "in training: validation reward may overstate generalisation"
            )
    return warnings


def rpc_message(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    return details() if callable(details) else str(exc)


def check_model_dir(model_dir: pathlib.Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    AutoConfig.from_pretrained(str(model_dir))
    AutoTokenizer.from_pretrained(str(model_dir))
    if not list(model_dir.glob("*.safetensors")):
        raise ValueError("no *.safetensors weights in the directory")


def tensor_shapes(model_dir: pathlib.Path) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes from the safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes
