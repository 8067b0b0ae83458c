import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_VALIDATING_FILES: _ClassVar[JobStatus]
    JOB_STATUS_QUEUED: _ClassVar[JobStatus]
    JOB_STATUS_RUNNING: _ClassVar[JobStatus]
    JOB_STATUS_PAUSED: _ClassVar[JobStatus]
    JOB_STATUS_SUCCEEDED: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_CANCELLED: _ClassVar[JobStatus]

class RlAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RL_ALGORITHM_UNSPECIFIED: _ClassVar[RlAlgorithm]
    RL_ALGORITHM_GRPO: _ClassVar[RlAlgorithm]
    RL_ALGORITHM_DR_GRPO: _ClassVar[RlAlgorithm]
    RL_ALGORITHM_RLOO: _ClassVar[RlAlgorithm]
    RL_ALGORITHM_PPO: _ClassVar[RlAlgorithm]
    RL_ALGORITHM_DAPO: _ClassVar[RlAlgorithm]
    RL_ALGORITHM_GSPO: _ClassVar[RlAlgorithm]
    RL_ALGORITHM_CISPO: _ClassVar[RlAlgorithm]

class RolloutCorrection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_CORRECTION_UNSPECIFIED: _ClassVar[RolloutCorrection]
    ROLLOUT_CORRECTION_NONE: _ClassVar[RolloutCorrection]
    ROLLOUT_CORRECTION_TIS: _ClassVar[RolloutCorrection]
    ROLLOUT_CORRECTION_MIS: _ClassVar[RolloutCorrection]

class ImportanceLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMPORTANCE_LEVEL_UNSPECIFIED: _ClassVar[ImportanceLevel]
    IMPORTANCE_LEVEL_TOKEN: _ClassVar[ImportanceLevel]
    IMPORTANCE_LEVEL_SEQUENCE: _ClassVar[ImportanceLevel]

class LossAggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOSS_AGGREGATION_UNSPECIFIED: _ClassVar[LossAggregation]
    LOSS_AGGREGATION_TOKEN_MEAN: _ClassVar[LossAggregation]
    LOSS_AGGREGATION_SEQUENCE_MEAN: _ClassVar[LossAggregation]
    LOSS_AGGREGATION_CONSTANT: _ClassVar[LossAggregation]

class ExportCheckpoint(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_CHECKPOINT_UNSPECIFIED: _ClassVar[ExportCheckpoint]
    EXPORT_CHECKPOINT_BEST: _ClassVar[ExportCheckpoint]
    EXPORT_CHECKPOINT_LAST: _ClassVar[ExportCheckpoint]

class KlEstimator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KL_ESTIMATOR_UNSPECIFIED: _ClassVar[KlEstimator]
    KL_ESTIMATOR_K1: _ClassVar[KlEstimator]
    KL_ESTIMATOR_K3: _ClassVar[KlEstimator]

class JobEventLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_EVENT_LEVEL_UNSPECIFIED: _ClassVar[JobEventLevel]
    JOB_EVENT_LEVEL_INFO: _ClassVar[JobEventLevel]
    JOB_EVENT_LEVEL_WARNING: _ClassVar[JobEventLevel]
    JOB_EVENT_LEVEL_ERROR: _ClassVar[JobEventLevel]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_VALIDATING_FILES: JobStatus
JOB_STATUS_QUEUED: JobStatus
JOB_STATUS_RUNNING: JobStatus
JOB_STATUS_PAUSED: JobStatus
JOB_STATUS_SUCCEEDED: JobStatus
JOB_STATUS_FAILED: JobStatus
JOB_STATUS_CANCELLED: JobStatus
RL_ALGORITHM_UNSPECIFIED: RlAlgorithm
RL_ALGORITHM_GRPO: RlAlgorithm
RL_ALGORITHM_DR_GRPO: RlAlgorithm
RL_ALGORITHM_RLOO: RlAlgorithm
RL_ALGORITHM_PPO: RlAlgorithm
RL_ALGORITHM_DAPO: RlAlgorithm
RL_ALGORITHM_GSPO: RlAlgorithm
RL_ALGORITHM_CISPO: RlAlgorithm
ROLLOUT_CORRECTION_UNSPECIFIED: RolloutCorrection
ROLLOUT_CORRECTION_NONE: RolloutCorrection
ROLLOUT_CORRECTION_TIS: RolloutCorrection
ROLLOUT_CORRECTION_MIS: RolloutCorrection
IMPORTANCE_LEVEL_UNSPECIFIED: ImportanceLevel
IMPORTANCE_LEVEL_TOKEN: ImportanceLevel
IMPORTANCE_LEVEL_SEQUENCE: ImportanceLevel
LOSS_AGGREGATION_UNSPECIFIED: LossAggregation
LOSS_AGGREGATION_TOKEN_MEAN: LossAggregation
LOSS_AGGREGATION_SEQUENCE_MEAN: LossAggregation
LOSS_AGGREGATION_CONSTANT: LossAggregation
EXPORT_CHECKPOINT_UNSPECIFIED: ExportCheckpoint
EXPORT_CHECKPOINT_BEST: ExportCheckpoint
EXPORT_CHECKPOINT_LAST: ExportCheckpoint
KL_ESTIMATOR_UNSPECIFIED: KlEstimator
KL_ESTIMATOR_K1: KlEstimator
KL_ESTIMATOR_K3: KlEstimator
JOB_EVENT_LEVEL_UNSPECIFIED: JobEventLevel
JOB_EVENT_LEVEL_INFO: JobEventLevel
JOB_EVENT_LEVEL_WARNING: JobEventLevel
JOB_EVENT_LEVEL_ERROR: JobEventLevel

class GraderConfig(_message.Message):
    __slots__ = ("spec", "grader_id", "service_address", "tenant")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    GRADER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    spec: _struct_pb2.Struct
    grader_id: str
    service_address: str
    tenant: str
    def __init__(self, spec: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., grader_id: _Optional[str] = ..., service_address: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class SupervisedHyperparameters(_message.Message):
    __slots__ = ("n_epochs", "batch_size", "learning_rate_multiplier", "lora_rank", "lora_alpha")
    N_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    LORA_ALPHA_FIELD_NUMBER: _ClassVar[int]
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    lora_rank: int
    lora_alpha: float
    def __init__(self, n_epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate_multiplier: _Optional[float] = ..., lora_rank: _Optional[int] = ..., lora_alpha: _Optional[float] = ...) -> None: ...

class SupervisedMethod(_message.Message):
    __slots__ = ("answer_field", "hyperparameters")
    ANSWER_FIELD_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    answer_field: str
    hyperparameters: SupervisedHyperparameters
    def __init__(self, answer_field: _Optional[str] = ..., hyperparameters: _Optional[_Union[SupervisedHyperparameters, _Mapping]] = ...) -> None: ...

class ReinforcementHyperparameters(_message.Message):
    __slots__ = ("n_epochs", "batch_size", "learning_rate_multiplier", "compute_multiplier", "eval_interval", "eval_samples", "group_size", "kl_coef", "clip_range", "max_new_tokens", "temperature", "sft_warmup_epochs", "sft_answer_field", "algorithm", "kl_estimator", "max_staleness", "lora_rank", "max_grader_error_fraction", "lora_alpha", "ppo_epochs", "num_minibatches", "clip_range_high", "gae_gamma", "gae_lambda", "value_clip_range", "value_loss_coef", "rollout_correction", "rollout_correction_cap", "rollout_correction_level", "dynamic_sampling", "dynamic_sampling_max_rounds", "overlong_buffer", "overlong_penalty", "loss_aggregation", "early_stopping_patience", "export_checkpoint", "max_turns", "tool_servers", "python_tools")
    N_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    EVAL_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    EVAL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    KL_COEF_FIELD_NUMBER: _ClassVar[int]
    CLIP_RANGE_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SFT_WARMUP_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    SFT_ANSWER_FIELD_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    KL_ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    MAX_GRADER_ERROR_FRACTION_FIELD_NUMBER: _ClassVar[int]
    LORA_ALPHA_FIELD_NUMBER: _ClassVar[int]
    PPO_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    NUM_MINIBATCHES_FIELD_NUMBER: _ClassVar[int]
    CLIP_RANGE_HIGH_FIELD_NUMBER: _ClassVar[int]
    GAE_GAMMA_FIELD_NUMBER: _ClassVar[int]
    GAE_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    VALUE_CLIP_RANGE_FIELD_NUMBER: _ClassVar[int]
    VALUE_LOSS_COEF_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_CORRECTION_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_CORRECTION_CAP_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_CORRECTION_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_SAMPLING_MAX_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    OVERLONG_BUFFER_FIELD_NUMBER: _ClassVar[int]
    OVERLONG_PENALTY_FIELD_NUMBER: _ClassVar[int]
    LOSS_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    EXPORT_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    TOOL_SERVERS_FIELD_NUMBER: _ClassVar[int]
    PYTHON_TOOLS_FIELD_NUMBER: _ClassVar[int]
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    compute_multiplier: float
    eval_interval: int
    eval_samples: int
    group_size: int
    kl_coef: float
    clip_range: float
    max_new_tokens: int
    temperature: float
    sft_warmup_epochs: int
    sft_answer_field: str
    algorithm: RlAlgorithm
    kl_estimator: KlEstimator
    max_staleness: int
    lora_rank: int
    max_grader_error_fraction: float
    lora_alpha: float
    ppo_epochs: int
    num_minibatches: int
    clip_range_high: float
    gae_gamma: float
    gae_lambda: float
    value_clip_range: float
    value_loss_coef: float
    rollout_correction: RolloutCorrection
    rollout_correction_cap: float
    rollout_correction_level: ImportanceLevel
    dynamic_sampling: bool
    dynamic_sampling_max_rounds: int
    overlong_buffer: int
    overlong_penalty: float
    loss_aggregation: LossAggregation
    early_stopping_patience: int
    export_checkpoint: ExportCheckpoint
    max_turns: int
    tool_servers: _containers.RepeatedScalarFieldContainer[str]
    python_tools: str
    def __init__(self, n_epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate_multiplier: _Optional[float] = ..., compute_multiplier: _Optional[float] = ..., eval_interval: _Optional[int] = ..., eval_samples: _Optional[int] = ..., group_size: _Optional[int] = ..., kl_coef: _Optional[float] = ..., clip_range: _Optional[float] = ..., max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., sft_warmup_epochs: _Optional[int] = ..., sft_answer_field: _Optional[str] = ..., algorithm: _Optional[_Union[RlAlgorithm, str]] = ..., kl_estimator: _Optional[_Union[KlEstimator, str]] = ..., max_staleness: _Optional[int] = ..., lora_rank: _Optional[int] = ..., max_grader_error_fraction: _Optional[float] = ..., lora_alpha: _Optional[float] = ..., ppo_epochs: _Optional[int] = ..., num_minibatches: _Optional[int] = ..., clip_range_high: _Optional[float] = ..., gae_gamma: _Optional[float] = ..., gae_lambda: _Optional[float] = ..., value_clip_range: _Optional[float] = ..., value_loss_coef: _Optional[float] = ..., rollout_correction: _Optional[_Union[RolloutCorrection, str]] = ..., rollout_correction_cap: _Optional[float] = ..., rollout_correction_level: _Optional[_Union[ImportanceLevel, str]] = ..., dynamic_sampling: _Optional[bool] = ..., dynamic_sampling_max_rounds: _Optional[int] = ..., overlong_buffer: _Optional[int] = ..., overlong_penalty: _Optional[float] = ..., loss_aggregation: _Optional[_Union[LossAggregation, str]] = ..., early_stopping_patience: _Optional[int] = ..., export_checkpoint: _Optional[_Union[ExportCheckpoint, str]] = ..., max_turns: _Optional[int] = ..., tool_servers: _Optional[_Iterable[str]] = ..., python_tools: _Optional[str] = ...) -> None: ...

class ReinforcementMethod(_message.Message):
    __slots__ = ("grader", "hyperparameters")
    GRADER_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    grader: GraderConfig
    hyperparameters: ReinforcementHyperparameters
    def __init__(self, grader: _Optional[_Union[GraderConfig, _Mapping]] = ..., hyperparameters: _Optional[_Union[ReinforcementHyperparameters, _Mapping]] = ...) -> None: ...

class Method(_message.Message):
    __slots__ = ("supervised", "reinforcement")
    SUPERVISED_FIELD_NUMBER: _ClassVar[int]
    REINFORCEMENT_FIELD_NUMBER: _ClassVar[int]
    supervised: SupervisedMethod
    reinforcement: ReinforcementMethod
    def __init__(self, supervised: _Optional[_Union[SupervisedMethod, _Mapping]] = ..., reinforcement: _Optional[_Union[ReinforcementMethod, _Mapping]] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "model", "training_file", "validation_file", "method", "status", "seed", "suffix", "create_time", "finish_time", "error", "fine_tuned_model", "trained_steps", "total_steps", "base_metrics", "final_metrics", "warmup_metrics", "exported_step")
    class BaseMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class FinalMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class WarmupMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FILE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FILE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FINE_TUNED_MODEL_FIELD_NUMBER: _ClassVar[int]
    TRAINED_STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    BASE_METRICS_FIELD_NUMBER: _ClassVar[int]
    FINAL_METRICS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_METRICS_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_STEP_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    training_file: str
    validation_file: str
    method: Method
    status: JobStatus
    seed: int
    suffix: str
    create_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    error: JobError
    fine_tuned_model: str
    trained_steps: int
    total_steps: int
    base_metrics: _containers.ScalarMap[str, float]
    final_metrics: _containers.ScalarMap[str, float]
    warmup_metrics: _containers.ScalarMap[str, float]
    exported_step: int
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., training_file: _Optional[str] = ..., validation_file: _Optional[str] = ..., method: _Optional[_Union[Method, _Mapping]] = ..., status: _Optional[_Union[JobStatus, str]] = ..., seed: _Optional[int] = ..., suffix: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., fine_tuned_model: _Optional[str] = ..., trained_steps: _Optional[int] = ..., total_steps: _Optional[int] = ..., base_metrics: _Optional[_Mapping[str, float]] = ..., final_metrics: _Optional[_Mapping[str, float]] = ..., warmup_metrics: _Optional[_Mapping[str, float]] = ..., exported_step: _Optional[int] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("model", "training_file", "validation_file", "method", "seed", "suffix")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FILE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FILE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_FIELD_NUMBER: _ClassVar[int]
    model: str
    training_file: str
    validation_file: str
    method: Method
    seed: int
    suffix: str
    def __init__(self, model: _Optional[str] = ..., training_file: _Optional[str] = ..., validation_file: _Optional[str] = ..., method: _Optional[_Union[Method, _Mapping]] = ..., seed: _Optional[int] = ..., suffix: _Optional[str] = ...) -> None: ...

class CreateJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class PauseJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class PauseJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ResumeJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ResumeJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "replay")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    replay: bool
    def __init__(self, job_id: _Optional[str] = ..., replay: _Optional[bool] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("seq", "time", "level", "message")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    level: JobEventLevel
    message: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., level: _Optional[_Union[JobEventLevel, str]] = ..., message: _Optional[str] = ...) -> None: ...

class MetricsPoint(_message.Message):
    __slots__ = ("step", "time", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    step: int
    time: _timestamp_pb2.Timestamp
    values: _containers.ScalarMap[str, float]
    def __init__(self, step: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("event", "metrics", "job")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    event: JobEvent
    metrics: MetricsPoint
    job: Job
    def __init__(self, event: _Optional[_Union[JobEvent, _Mapping]] = ..., metrics: _Optional[_Union[MetricsPoint, _Mapping]] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("id", "job_id", "step", "create_time", "path", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    id: str
    job_id: str
    step: int
    create_time: _timestamp_pb2.Timestamp
    path: str
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, id: _Optional[str] = ..., job_id: _Optional[str] = ..., step: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., path: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints", "next_page_token")
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    next_page_token: str
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
