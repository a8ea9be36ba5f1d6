import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from llmops.v1 import common_pb2 as _common_pb2
from llmops.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Trace(_message.Message):
    __slots__ = ("trace_id", "spans", "scores", "feedback", "summary", "completion")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    spans: _containers.RepeatedCompositeFieldContainer[_common_pb2.Span]
    scores: _containers.RepeatedCompositeFieldContainer[_common_pb2.Score]
    feedback: _containers.RepeatedCompositeFieldContainer[_common_pb2.Feedback]
    summary: TraceSummary
    completion: _events_pb2.CompletionEvent
    def __init__(self, trace_id: _Optional[str] = ..., spans: _Optional[_Iterable[_Union[_common_pb2.Span, _Mapping]]] = ..., scores: _Optional[_Iterable[_Union[_common_pb2.Score, _Mapping]]] = ..., feedback: _Optional[_Iterable[_Union[_common_pb2.Feedback, _Mapping]]] = ..., summary: _Optional[_Union[TraceSummary, _Mapping]] = ..., completion: _Optional[_Union[_events_pb2.CompletionEvent, _Mapping]] = ...) -> None: ...

class TraceSummary(_message.Message):
    __slots__ = ("trace_id", "start_time", "latency_ms", "model", "session_id", "user_id", "prompt", "answer", "usage", "prompt_template", "prompt_version", "finish_reason", "span_count", "metadata", "status", "scores", "route", "route_revision", "deployment", "deployment_version", "arm", "attempts", "fallback", "shadow_of", "error")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    SPAN_COUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_REVISION_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    SHADOW_OF_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    start_time: _timestamp_pb2.Timestamp
    latency_ms: float
    model: str
    session_id: str
    user_id: str
    prompt: str
    answer: str
    usage: _common_pb2.Usage
    prompt_template: str
    prompt_version: int
    finish_reason: str
    span_count: int
    metadata: _containers.ScalarMap[str, str]
    status: _common_pb2.SpanStatus
    scores: _containers.RepeatedCompositeFieldContainer[_common_pb2.Score]
    route: str
    route_revision: int
    deployment: str
    deployment_version: int
    arm: str
    attempts: int
    fallback: bool
    shadow_of: str
    error: str
    def __init__(self, trace_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latency_ms: _Optional[float] = ..., model: _Optional[str] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., prompt: _Optional[str] = ..., answer: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., prompt_template: _Optional[str] = ..., prompt_version: _Optional[int] = ..., finish_reason: _Optional[str] = ..., span_count: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., status: _Optional[_Union[_common_pb2.SpanStatus, str]] = ..., scores: _Optional[_Iterable[_Union[_common_pb2.Score, _Mapping]]] = ..., route: _Optional[str] = ..., route_revision: _Optional[int] = ..., deployment: _Optional[str] = ..., deployment_version: _Optional[int] = ..., arm: _Optional[str] = ..., attempts: _Optional[int] = ..., fallback: bool = ..., shadow_of: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class GetTraceRequest(_message.Message):
    __slots__ = ("trace_id",)
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    def __init__(self, trace_id: _Optional[str] = ...) -> None: ...

class ListTracesRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "session_id", "user_id", "model", "page_size", "page_token", "score_name", "evaluator", "min_score", "max_score", "route", "deployment", "deployment_version", "arm")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SCORE_NAME_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    MAX_SCORE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    session_id: str
    user_id: str
    model: str
    page_size: int
    page_token: str
    score_name: str
    evaluator: str
    min_score: float
    max_score: float
    route: str
    deployment: str
    deployment_version: int
    arm: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., model: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., score_name: _Optional[str] = ..., evaluator: _Optional[str] = ..., min_score: _Optional[float] = ..., max_score: _Optional[float] = ..., route: _Optional[str] = ..., deployment: _Optional[str] = ..., deployment_version: _Optional[int] = ..., arm: _Optional[str] = ...) -> None: ...

class ListTracesResponse(_message.Message):
    __slots__ = ("traces", "next_page_token")
    TRACES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    traces: _containers.RepeatedCompositeFieldContainer[TraceSummary]
    next_page_token: str
    def __init__(self, traces: _Optional[_Iterable[_Union[TraceSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("trace_id", "score", "comment", "user_id", "name")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    score: float
    comment: str
    user_id: str
    name: str
    def __init__(self, trace_id: _Optional[str] = ..., score: _Optional[float] = ..., comment: _Optional[str] = ..., user_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ("feedback",)
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    feedback: _common_pb2.Feedback
    def __init__(self, feedback: _Optional[_Union[_common_pb2.Feedback, _Mapping]] = ...) -> None: ...

class EvalItem(_message.Message):
    __slots__ = ("item_id", "question", "reference", "answer", "contexts", "trace_id", "scores", "latency_ms", "error", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    question: str
    reference: str
    answer: str
    contexts: _containers.RepeatedScalarFieldContainer[str]
    trace_id: str
    scores: _containers.RepeatedCompositeFieldContainer[_common_pb2.Score]
    latency_ms: float
    error: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, item_id: _Optional[str] = ..., question: _Optional[str] = ..., reference: _Optional[str] = ..., answer: _Optional[str] = ..., contexts: _Optional[_Iterable[str]] = ..., trace_id: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[_common_pb2.Score, _Mapping]]] = ..., latency_ms: _Optional[float] = ..., error: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EvalRun(_message.Message):
    __slots__ = ("run_id", "name", "dataset", "dataset_hash", "model", "prompt_template", "prompt_version", "retrieval", "evaluators", "created_at", "item_count", "error_count", "aggregates", "items", "metadata")
    class AggregatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_HASH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    EVALUATORS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    AGGREGATES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    name: str
    dataset: str
    dataset_hash: str
    model: str
    prompt_template: str
    prompt_version: int
    retrieval: bool
    evaluators: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    item_count: int
    error_count: int
    aggregates: _containers.ScalarMap[str, float]
    items: _containers.RepeatedCompositeFieldContainer[EvalItem]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, run_id: _Optional[str] = ..., name: _Optional[str] = ..., dataset: _Optional[str] = ..., dataset_hash: _Optional[str] = ..., model: _Optional[str] = ..., prompt_template: _Optional[str] = ..., prompt_version: _Optional[int] = ..., retrieval: bool = ..., evaluators: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., item_count: _Optional[int] = ..., error_count: _Optional[int] = ..., aggregates: _Optional[_Mapping[str, float]] = ..., items: _Optional[_Iterable[_Union[EvalItem, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SaveEvalRunRequest(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: EvalRun
    def __init__(self, run: _Optional[_Union[EvalRun, _Mapping]] = ...) -> None: ...

class GetEvalRunRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListEvalRunsRequest(_message.Message):
    __slots__ = ("dataset_hash", "page_size")
    DATASET_HASH_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    dataset_hash: str
    page_size: int
    def __init__(self, dataset_hash: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListEvalRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[EvalRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[EvalRun, _Mapping]]] = ...) -> None: ...
