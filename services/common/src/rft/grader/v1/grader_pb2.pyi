import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from rft.tools.v1 import tools_pb2 as _tools_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GradeErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRADE_ERROR_KIND_UNSPECIFIED: _ClassVar[GradeErrorKind]
    GRADE_ERROR_KIND_EXCEPTION: _ClassVar[GradeErrorKind]
    GRADE_ERROR_KIND_TIMEOUT: _ClassVar[GradeErrorKind]
    GRADE_ERROR_KIND_INVALID_SCORE: _ClassVar[GradeErrorKind]
    GRADE_ERROR_KIND_RESOURCE_LIMIT: _ClassVar[GradeErrorKind]
    GRADE_ERROR_KIND_CRASHED: _ClassVar[GradeErrorKind]
    GRADE_ERROR_KIND_TEMPLATE: _ClassVar[GradeErrorKind]
    GRADE_ERROR_KIND_MODEL_CALL: _ClassVar[GradeErrorKind]
    GRADE_ERROR_KIND_INVALID_INPUT: _ClassVar[GradeErrorKind]
GRADE_ERROR_KIND_UNSPECIFIED: GradeErrorKind
GRADE_ERROR_KIND_EXCEPTION: GradeErrorKind
GRADE_ERROR_KIND_TIMEOUT: GradeErrorKind
GRADE_ERROR_KIND_INVALID_SCORE: GradeErrorKind
GRADE_ERROR_KIND_RESOURCE_LIMIT: GradeErrorKind
GRADE_ERROR_KIND_CRASHED: GradeErrorKind
GRADE_ERROR_KIND_TEMPLATE: GradeErrorKind
GRADE_ERROR_KIND_MODEL_CALL: GradeErrorKind
GRADE_ERROR_KIND_INVALID_INPUT: GradeErrorKind

class SampleOutput(_message.Message):
    __slots__ = ("output_text", "output_json", "output_tools", "output_messages")
    OUTPUT_TEXT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOOLS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    output_text: str
    output_json: _struct_pb2.Struct
    output_tools: _struct_pb2.ListValue
    output_messages: _struct_pb2.ListValue
    def __init__(self, output_text: _Optional[str] = ..., output_json: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output_tools: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., output_messages: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ...) -> None: ...

class GradeItem(_message.Message):
    __slots__ = ("sample", "item")
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    sample: SampleOutput
    item: _struct_pb2.Struct
    def __init__(self, sample: _Optional[_Union[SampleOutput, _Mapping]] = ..., item: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GradeRequest(_message.Message):
    __slots__ = ("tenant", "spec", "grader_id", "items")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    GRADER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    spec: _struct_pb2.Struct
    grader_id: str
    items: _containers.RepeatedCompositeFieldContainer[GradeItem]
    def __init__(self, tenant: _Optional[str] = ..., spec: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., grader_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[GradeItem, _Mapping]]] = ...) -> None: ...

class GradeError(_message.Message):
    __slots__ = ("kind", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: GradeErrorKind
    message: str
    def __init__(self, kind: _Optional[_Union[GradeErrorKind, str]] = ..., message: _Optional[str] = ...) -> None: ...

class GradeResult(_message.Message):
    __slots__ = ("score", "sub_scores", "metrics", "passed", "error")
    class SubScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SUB_SCORES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    score: float
    sub_scores: _containers.ScalarMap[str, float]
    metrics: _containers.ScalarMap[str, float]
    passed: bool
    error: GradeError
    def __init__(self, score: _Optional[float] = ..., sub_scores: _Optional[_Mapping[str, float]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., passed: _Optional[bool] = ..., error: _Optional[_Union[GradeError, _Mapping]] = ...) -> None: ...

class GradeResponse(_message.Message):
    __slots__ = ("results", "grader_type", "grade_seconds")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    GRADER_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRADE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[GradeResult]
    grader_type: str
    grade_seconds: float
    def __init__(self, results: _Optional[_Iterable[_Union[GradeResult, _Mapping]]] = ..., grader_type: _Optional[str] = ..., grade_seconds: _Optional[float] = ...) -> None: ...

class ValidateGraderRequest(_message.Message):
    __slots__ = ("tenant", "spec")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    spec: _struct_pb2.Struct
    def __init__(self, tenant: _Optional[str] = ..., spec: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ValidationIssue(_message.Message):
    __slots__ = ("field", "message")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    field: str
    message: str
    def __init__(self, field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ValidateGraderResponse(_message.Message):
    __slots__ = ("valid", "issues", "grader_type")
    VALID_FIELD_NUMBER: _ClassVar[int]
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    GRADER_TYPE_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    issues: _containers.RepeatedCompositeFieldContainer[ValidationIssue]
    grader_type: str
    def __init__(self, valid: _Optional[bool] = ..., issues: _Optional[_Iterable[_Union[ValidationIssue, _Mapping]]] = ..., grader_type: _Optional[str] = ...) -> None: ...

class Grader(_message.Message):
    __slots__ = ("id", "tenant", "name", "type", "spec", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    name: str
    type: str
    spec: _struct_pb2.Struct
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., spec: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterGraderRequest(_message.Message):
    __slots__ = ("tenant", "name", "spec")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    spec: _struct_pb2.Struct
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., spec: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class RegisterGraderResponse(_message.Message):
    __slots__ = ("grader",)
    GRADER_FIELD_NUMBER: _ClassVar[int]
    grader: Grader
    def __init__(self, grader: _Optional[_Union[Grader, _Mapping]] = ...) -> None: ...

class GetGraderRequest(_message.Message):
    __slots__ = ("tenant", "grader_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    GRADER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    grader_id: str
    def __init__(self, tenant: _Optional[str] = ..., grader_id: _Optional[str] = ...) -> None: ...

class GetGraderResponse(_message.Message):
    __slots__ = ("grader",)
    GRADER_FIELD_NUMBER: _ClassVar[int]
    grader: Grader
    def __init__(self, grader: _Optional[_Union[Grader, _Mapping]] = ...) -> None: ...

class ListGradersRequest(_message.Message):
    __slots__ = ("tenant", "page_size", "page_token")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    page_size: int
    page_token: str
    def __init__(self, tenant: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListGradersResponse(_message.Message):
    __slots__ = ("graders", "next_page_token")
    GRADERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    graders: _containers.RepeatedCompositeFieldContainer[Grader]
    next_page_token: str
    def __init__(self, graders: _Optional[_Iterable[_Union[Grader, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteGraderRequest(_message.Message):
    __slots__ = ("tenant", "grader_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    GRADER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    grader_id: str
    def __init__(self, tenant: _Optional[str] = ..., grader_id: _Optional[str] = ...) -> None: ...

class DeleteGraderResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGraderTypesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GraderType(_message.Message):
    __slots__ = ("name", "description", "openai_compatible", "enabled")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OPENAI_COMPATIBLE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    openai_compatible: bool
    enabled: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., openai_compatible: _Optional[bool] = ..., enabled: _Optional[bool] = ...) -> None: ...

class ListGraderTypesResponse(_message.Message):
    __slots__ = ("types",)
    TYPES_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedCompositeFieldContainer[GraderType]
    def __init__(self, types: _Optional[_Iterable[_Union[GraderType, _Mapping]]] = ...) -> None: ...

class DescribePythonToolsRequest(_message.Message):
    __slots__ = ("tenant", "source")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    source: str
    def __init__(self, tenant: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class DescribePythonToolsResponse(_message.Message):
    __slots__ = ("tools",)
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[_tools_pb2.Tool]
    def __init__(self, tools: _Optional[_Iterable[_Union[_tools_pb2.Tool, _Mapping]]] = ...) -> None: ...

class CallPythonToolRequest(_message.Message):
    __slots__ = ("tenant", "source", "name", "arguments", "episode_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    source: str
    name: str
    arguments: _struct_pb2.Struct
    episode_id: str
    def __init__(self, tenant: _Optional[str] = ..., source: _Optional[str] = ..., name: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., episode_id: _Optional[str] = ...) -> None: ...

class CallPythonToolResponse(_message.Message):
    __slots__ = ("content", "is_error")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    content: str
    is_error: bool
    def __init__(self, content: _Optional[str] = ..., is_error: _Optional[bool] = ...) -> None: ...
