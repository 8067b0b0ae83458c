"""Model names of the HTTP API: the operator's catalogue of base models, and the names of
fine-tuned models and their checkpoints, in OpenAI's shape:

    demo-base                                        a catalogue entry
    ft:demo-base:alice:my-suffix:ftjob-abc           the model a job exported
    ft:demo-base:alice:my-suffix:ftjob-abc:ckpt-step-8   one of its checkpoints

A request names a model, never a path; a name resolves to a directory only for the
tenant that owns it."""

from __future__ import annotations

import dataclasses
import pathlib

from rft.learner.v1 import fine_tuning_pb2 as S
from rft_common.api_keys import TENANT_NAME

from rft_learner.http_api.errors import ApiError
from rft_learner.job_store import JobNotFound, JobRecord, JobStore

CHECKPOINT_PREFIX = "ckpt-step-"


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    id: str
    directory: pathlib.Path
    created: int
    owned_by: str


class ModelCatalogue:
    """Base models by name, from --model-catalogue 'name=dir,name=dir'."""

    def __init__(self, entries: dict[str, pathlib.Path]) -> None:
        self.entries = entries
        self._names_by_dir = {str(path.resolve()): name for name, path in entries.items()}

    @classmethod
    def parse(cls, spec: str) -> ModelCatalogue:
        """Raises ValueError naming the bad entry."""
        entries: dict[str, pathlib.Path] = {}
        for raw in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, directory = raw.partition("=")
            if not sep or not TENANT_NAME.fullmatch(name) or name.startswith("ft"):
                raise ValueError(
                    f"model catalogue entry {raw!r}: expected name=model-dir, the name of letters, digits,"
                    " '.', '_' or '-' (not starting with 'ft')"
                )
            path = pathlib.Path(directory).expanduser()
            if not (path / "config.json").is_file():
                raise ValueError(f"model catalogue entry {raw!r}: {path} is not a model directory (no config.json)")
            if name in entries:
                raise ValueError(f"model catalogue: {name!r} appears twice")
            entries[name] = path
        return cls(entries)

    def name_of(self, directory: str) -> str | None:
        return self._names_by_dir.get(str(pathlib.Path(directory).resolve()))


class ModelNames:
    """Names and resolution of the models a tenant may use."""

    def __init__(self, catalogue: ModelCatalogue, jobs: JobStore) -> None:
        self.catalogue = catalogue
        self.jobs = jobs

    def base_name(self, job: JobRecord) -> str:
        """The root base model's name: fine-tuning a fine-tuned model keeps its root, as OpenAI does."""
        if job.model_name.startswith("ft:"):
            return job.model_name.split(":")[1]
        if job.model_name:
            return job.model_name
        return self.catalogue.name_of(job.request.model) or pathlib.PurePath(job.request.model).name

    def fine_tuned(self, job: JobRecord) -> str | None:
        if job.status != S.JOB_STATUS_SUCCEEDED or not job.fine_tuned_model:
            return None
        return f"ft:{self.base_name(job)}:{job.owner}:{job.request.suffix}:{job.id}"

    def checkpoint(self, job: JobRecord, step: int) -> str:
        return f"ft:{self.base_name(job)}:{job.owner}:{job.request.suffix}:{job.id}:{CHECKPOINT_PREFIX}{step}"

    def resolve(self, model_id: str, tenant: str, param: str = "model") -> ResolvedModel:
        """The directory behind a model name, or a 404 that does not say whether another
        tenant has a model of that name."""
        if model_id in self.catalogue.entries:
            path = self.catalogue.entries[model_id]
            return ResolvedModel(model_id, path, int((path / "config.json").stat().st_mtime), "system")
        missing = ApiError(
            404,
            f"The model '{model_id}' does not exist or you do not have access to it. Base models: "
            f"{', '.join(sorted(self.catalogue.entries)) or 'none configured (--model-catalogue)'}; "
            "fine-tuned models: GET /v1/models.",
            param=param,
            code="model_not_found",
        )
        parts = model_id.split(":")
        if parts[0] != "ft" or len(parts) not in (5, 6):
            raise missing
        try:
            job = self.jobs.get(parts[4], owner=tenant)
        except JobNotFound:
            raise missing from None
        if len(parts) == 5:
            if self.fine_tuned(job) != model_id:
                raise missing
            return ResolvedModel(model_id, pathlib.Path(job.fine_tuned_model), int(job.finished_at or 0), tenant)
        step_text = parts[5].removeprefix(CHECKPOINT_PREFIX)
        if not parts[5].startswith(CHECKPOINT_PREFIX) or not step_text.isdigit():
            raise missing
        step = int(step_text)
        if self.checkpoint(job, step) != model_id:
            raise missing
        for record in self.jobs.checkpoints(job.id, 1_000_000):
            # A checkpoint directory holds the servable model in model/ (trainer.checkpoint);
            # one deleted since (older checkpoints are pruned) is no longer a model.
            directory = pathlib.Path(record.path) / "model"
            if record.step == step and (directory / "config.json").is_file():
                return ResolvedModel(model_id, directory, int(record.time), tenant)
        raise missing

    def tenant_models(self, tenant: str) -> list[ResolvedModel]:
        """The catalogue, then the tenant's fine-tuned models, newest first."""
        models = [self.resolve(name, tenant) for name in sorted(self.catalogue.entries)]
        for job in self.jobs.with_status(S.JOB_STATUS_SUCCEEDED, owner=tenant):
            name = self.fine_tuned(job)
            if name:
                models.append(
                    ResolvedModel(name, pathlib.Path(job.fine_tuned_model), int(job.finished_at or 0), tenant)
                )
        return models[: len(self.catalogue.entries)] + sorted(
            models[len(self.catalogue.entries) :], key=lambda m: -m.created
        )
