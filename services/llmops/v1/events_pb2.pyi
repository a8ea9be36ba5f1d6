import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from llmops.v1 import common_pb2 as _common_pb2
from llmops.v1 import inference_pb2 as _inference_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_DECISION_UNSPECIFIED: _ClassVar[RolloutDecision]
    ROLLOUT_DECISION_ROLLBACK: _ClassVar[RolloutDecision]
    ROLLOUT_DECISION_PROMOTE: _ClassVar[RolloutDecision]
    ROLLOUT_DECISION_PASSED: _ClassVar[RolloutDecision]
ROLLOUT_DECISION_UNSPECIFIED: RolloutDecision
ROLLOUT_DECISION_ROLLBACK: RolloutDecision
ROLLOUT_DECISION_PROMOTE: RolloutDecision
ROLLOUT_DECISION_PASSED: RolloutDecision

class SpanEvent(_message.Message):
    __slots__ = ("trace_id", "span_id", "parent_span_id", "name", "start_time", "end_time", "attributes", "status", "status_message", "service")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    attributes: _containers.ScalarMap[str, str]
    status: _common_pb2.SpanStatus
    status_message: str
    service: str
    def __init__(self, trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., name: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., status: _Optional[_Union[_common_pb2.SpanStatus, str]] = ..., status_message: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class CompletionEvent(_message.Message):
    __slots__ = ("trace_id", "timestamp", "model", "prompt", "contexts", "answer", "usage", "latency_ms", "prompt_template", "prompt_version", "session_id", "user_id", "metadata", "finish_reason", "rendered_prompt", "retrieval_top_score", "root_span_id", "route", "route_revision", "deployment", "deployment_version", "arm", "attempts", "fallback", "shadow_of", "error")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    RENDERED_PROMPT_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_TOP_SCORE_FIELD_NUMBER: _ClassVar[int]
    ROOT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
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
    timestamp: _timestamp_pb2.Timestamp
    model: str
    prompt: str
    contexts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Context]
    answer: str
    usage: _common_pb2.Usage
    latency_ms: float
    prompt_template: str
    prompt_version: int
    session_id: str
    user_id: str
    metadata: _containers.ScalarMap[str, str]
    finish_reason: str
    rendered_prompt: str
    retrieval_top_score: float
    root_span_id: str
    route: str
    route_revision: int
    deployment: str
    deployment_version: int
    arm: str
    attempts: int
    fallback: bool
    shadow_of: str
    error: str
    def __init__(self, trace_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model: _Optional[str] = ..., prompt: _Optional[str] = ..., contexts: _Optional[_Iterable[_Union[_common_pb2.Context, _Mapping]]] = ..., answer: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., latency_ms: _Optional[float] = ..., prompt_template: _Optional[str] = ..., prompt_version: _Optional[int] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., finish_reason: _Optional[str] = ..., rendered_prompt: _Optional[str] = ..., retrieval_top_score: _Optional[float] = ..., root_span_id: _Optional[str] = ..., route: _Optional[str] = ..., route_revision: _Optional[int] = ..., deployment: _Optional[str] = ..., deployment_version: _Optional[int] = ..., arm: _Optional[str] = ..., attempts: _Optional[int] = ..., fallback: bool = ..., shadow_of: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ScoreEvent(_message.Message):
    __slots__ = ("trace_id", "score", "span_id", "model", "prompt_template", "prompt_version", "tier", "route", "route_revision", "deployment", "deployment_version", "arm")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_REVISION_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    score: _common_pb2.Score
    span_id: str
    model: str
    prompt_template: str
    prompt_version: int
    tier: str
    route: str
    route_revision: int
    deployment: str
    deployment_version: int
    arm: str
    def __init__(self, trace_id: _Optional[str] = ..., score: _Optional[_Union[_common_pb2.Score, _Mapping]] = ..., span_id: _Optional[str] = ..., model: _Optional[str] = ..., prompt_template: _Optional[str] = ..., prompt_version: _Optional[int] = ..., tier: _Optional[str] = ..., route: _Optional[str] = ..., route_revision: _Optional[int] = ..., deployment: _Optional[str] = ..., deployment_version: _Optional[int] = ..., arm: _Optional[str] = ...) -> None: ...

class FeedbackEvent(_message.Message):
    __slots__ = ("trace_id", "feedback")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    feedback: _common_pb2.Feedback
    def __init__(self, trace_id: _Optional[str] = ..., feedback: _Optional[_Union[_common_pb2.Feedback, _Mapping]] = ...) -> None: ...

class DocumentEvent(_message.Message):
    __slots__ = ("id", "text", "collection", "metadata", "deleted")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    collection: str
    metadata: _containers.ScalarMap[str, str]
    deleted: bool
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., collection: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., deleted: bool = ...) -> None: ...

class DriftReportEvent(_message.Message):
    __slots__ = ("monitor", "report_id", "window_start", "window_end", "window_size", "reference_id", "drift_detected", "drift_share", "features", "report_path", "report_json_path", "score_means", "seconds", "quality")
    class ScoreMeansEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    DRIFT_DETECTED_FIELD_NUMBER: _ClassVar[int]
    DRIFT_SHARE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    REPORT_PATH_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_PATH_FIELD_NUMBER: _ClassVar[int]
    SCORE_MEANS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    monitor: str
    report_id: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    window_size: int
    reference_id: str
    drift_detected: bool
    drift_share: float
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    report_path: str
    report_json_path: str
    score_means: _containers.ScalarMap[str, float]
    seconds: float
    quality: _containers.RepeatedCompositeFieldContainer[QualityTest]
    def __init__(self, monitor: _Optional[str] = ..., report_id: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_size: _Optional[int] = ..., reference_id: _Optional[str] = ..., drift_detected: bool = ..., drift_share: _Optional[float] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., report_path: _Optional[str] = ..., report_json_path: _Optional[str] = ..., score_means: _Optional[_Mapping[str, float]] = ..., seconds: _Optional[float] = ..., quality: _Optional[_Iterable[_Union[QualityTest, _Mapping]]] = ...) -> None: ...

class QualityTest(_message.Message):
    __slots__ = ("score", "test", "statistic", "p_value", "alpha", "reference_mean", "reference_n", "window_mean", "window_n", "mean_drop", "effect_size", "dropped", "min_drop", "min_effect_size")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_MEAN_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_N_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MEAN_FIELD_NUMBER: _ClassVar[int]
    WINDOW_N_FIELD_NUMBER: _ClassVar[int]
    MEAN_DROP_FIELD_NUMBER: _ClassVar[int]
    EFFECT_SIZE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    MIN_DROP_FIELD_NUMBER: _ClassVar[int]
    MIN_EFFECT_SIZE_FIELD_NUMBER: _ClassVar[int]
    score: str
    test: str
    statistic: float
    p_value: float
    alpha: float
    reference_mean: float
    reference_n: int
    window_mean: float
    window_n: int
    mean_drop: float
    effect_size: float
    dropped: bool
    min_drop: float
    min_effect_size: float
    def __init__(self, score: _Optional[str] = ..., test: _Optional[str] = ..., statistic: _Optional[float] = ..., p_value: _Optional[float] = ..., alpha: _Optional[float] = ..., reference_mean: _Optional[float] = ..., reference_n: _Optional[int] = ..., window_mean: _Optional[float] = ..., window_n: _Optional[int] = ..., mean_drop: _Optional[float] = ..., effect_size: _Optional[float] = ..., dropped: bool = ..., min_drop: _Optional[float] = ..., min_effect_size: _Optional[float] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "drifted", "statistic", "p_value", "method", "threshold")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    feature: str
    drifted: bool
    statistic: float
    p_value: float
    method: str
    threshold: float
    def __init__(self, feature: _Optional[str] = ..., drifted: bool = ..., statistic: _Optional[float] = ..., p_value: _Optional[float] = ..., method: _Optional[str] = ..., threshold: _Optional[float] = ...) -> None: ...

class Window(_message.Message):
    __slots__ = ("start", "end", "count")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    count: int
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class RetrainEvent(_message.Message):
    __slots__ = ("id", "monitor", "reason", "evidence", "window", "trace_ids", "reference_id", "low_score_trace_ids", "created_at", "score_means", "report_id", "report_path", "causes", "quality")
    class ScoreMeansEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    TRACE_IDS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    LOW_SCORE_TRACE_IDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SCORE_MEANS_FIELD_NUMBER: _ClassVar[int]
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    REPORT_PATH_FIELD_NUMBER: _ClassVar[int]
    CAUSES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    monitor: str
    reason: str
    evidence: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    window: Window
    trace_ids: _containers.RepeatedScalarFieldContainer[str]
    reference_id: str
    low_score_trace_ids: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    score_means: _containers.ScalarMap[str, float]
    report_id: str
    report_path: str
    causes: _containers.RepeatedScalarFieldContainer[str]
    quality: _containers.RepeatedCompositeFieldContainer[QualityTest]
    def __init__(self, id: _Optional[str] = ..., monitor: _Optional[str] = ..., reason: _Optional[str] = ..., evidence: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., window: _Optional[_Union[Window, _Mapping]] = ..., trace_ids: _Optional[_Iterable[str]] = ..., reference_id: _Optional[str] = ..., low_score_trace_ids: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., score_means: _Optional[_Mapping[str, float]] = ..., report_id: _Optional[str] = ..., report_path: _Optional[str] = ..., causes: _Optional[_Iterable[str]] = ..., quality: _Optional[_Iterable[_Union[QualityTest, _Mapping]]] = ...) -> None: ...

class ConfigRecord(_message.Message):
    __slots__ = ("deployment", "route", "prompt", "label")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    deployment: _inference_pb2.Deployment
    route: _inference_pb2.Route
    prompt: _inference_pb2.PromptTemplate
    label: PromptLabel
    def __init__(self, deployment: _Optional[_Union[_inference_pb2.Deployment, _Mapping]] = ..., route: _Optional[_Union[_inference_pb2.Route, _Mapping]] = ..., prompt: _Optional[_Union[_inference_pb2.PromptTemplate, _Mapping]] = ..., label: _Optional[_Union[PromptLabel, _Mapping]] = ...) -> None: ...

class PromptLabel(_message.Message):
    __slots__ = ("name", "label", "version", "set_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SET_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    label: str
    version: int
    set_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., label: _Optional[str] = ..., version: _Optional[int] = ..., set_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeploymentEvent(_message.Message):
    __slots__ = ("id", "route", "route_revision", "decision", "canary", "primary", "reason", "timestamp", "evidence", "applied_revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_REVISION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    route: str
    route_revision: int
    decision: RolloutDecision
    canary: _inference_pb2.DeploymentRef
    primary: _inference_pb2.DeploymentRef
    reason: str
    timestamp: _timestamp_pb2.Timestamp
    evidence: RolloutEvidence
    applied_revision: int
    def __init__(self, id: _Optional[str] = ..., route: _Optional[str] = ..., route_revision: _Optional[int] = ..., decision: _Optional[_Union[RolloutDecision, str]] = ..., canary: _Optional[_Union[_inference_pb2.DeploymentRef, _Mapping]] = ..., primary: _Optional[_Union[_inference_pb2.DeploymentRef, _Mapping]] = ..., reason: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., evidence: _Optional[_Union[RolloutEvidence, _Mapping]] = ..., applied_revision: _Optional[int] = ...) -> None: ...

class RolloutEvidence(_message.Message):
    __slots__ = ("score", "canary_n", "primary_n", "canary_mean", "primary_mean", "difference", "max_drop", "test", "statistic", "threshold", "canary_error_rate", "canary_p95_latency_ms", "primary_p95_latency_ms", "canary_requests", "canary_errors")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CANARY_N_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_N_FIELD_NUMBER: _ClassVar[int]
    CANARY_MEAN_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_MEAN_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_DROP_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CANARY_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    CANARY_P95_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_P95_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CANARY_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    CANARY_ERRORS_FIELD_NUMBER: _ClassVar[int]
    score: str
    canary_n: int
    primary_n: int
    canary_mean: float
    primary_mean: float
    difference: float
    max_drop: float
    test: str
    statistic: float
    threshold: float
    canary_error_rate: float
    canary_p95_latency_ms: float
    primary_p95_latency_ms: float
    canary_requests: int
    canary_errors: int
    def __init__(self, score: _Optional[str] = ..., canary_n: _Optional[int] = ..., primary_n: _Optional[int] = ..., canary_mean: _Optional[float] = ..., primary_mean: _Optional[float] = ..., difference: _Optional[float] = ..., max_drop: _Optional[float] = ..., test: _Optional[str] = ..., statistic: _Optional[float] = ..., threshold: _Optional[float] = ..., canary_error_rate: _Optional[float] = ..., canary_p95_latency_ms: _Optional[float] = ..., primary_p95_latency_ms: _Optional[float] = ..., canary_requests: _Optional[int] = ..., canary_errors: _Optional[int] = ...) -> None: ...
