import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from llmops.v1 import events_pb2 as _events_pb2
from llmops.v1 import inference_pb2 as _inference_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MonitorStatus(_message.Message):
    __slots__ = ("monitor", "reference_id", "reference_size", "recent_windows", "consecutive_drifted", "last_retrain_at", "scope", "window_size", "window_seconds", "method", "current_window_count", "reference_created_at", "reference_source", "retrain_events", "quality_min", "consecutive_required")
    class QualityMinEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SIZE_FIELD_NUMBER: _ClassVar[int]
    RECENT_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_DRIFTED_FIELD_NUMBER: _ClassVar[int]
    LAST_RETRAIN_AT_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CURRENT_WINDOW_COUNT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_EVENTS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_MIN_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    monitor: str
    reference_id: str
    reference_size: int
    recent_windows: _containers.RepeatedCompositeFieldContainer[_events_pb2.DriftReportEvent]
    consecutive_drifted: int
    last_retrain_at: _timestamp_pb2.Timestamp
    scope: str
    window_size: int
    window_seconds: float
    method: str
    current_window_count: int
    reference_created_at: _timestamp_pb2.Timestamp
    reference_source: str
    retrain_events: int
    quality_min: _containers.ScalarMap[str, float]
    consecutive_required: int
    def __init__(self, monitor: _Optional[str] = ..., reference_id: _Optional[str] = ..., reference_size: _Optional[int] = ..., recent_windows: _Optional[_Iterable[_Union[_events_pb2.DriftReportEvent, _Mapping]]] = ..., consecutive_drifted: _Optional[int] = ..., last_retrain_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scope: _Optional[str] = ..., window_size: _Optional[int] = ..., window_seconds: _Optional[float] = ..., method: _Optional[str] = ..., current_window_count: _Optional[int] = ..., reference_created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reference_source: _Optional[str] = ..., retrain_events: _Optional[int] = ..., quality_min: _Optional[_Mapping[str, float]] = ..., consecutive_required: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("monitor",)
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    monitor: str
    def __init__(self, monitor: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("monitors",)
    MONITORS_FIELD_NUMBER: _ClassVar[int]
    monitors: _containers.RepeatedCompositeFieldContainer[MonitorStatus]
    def __init__(self, monitors: _Optional[_Iterable[_Union[MonitorStatus, _Mapping]]] = ...) -> None: ...

class SetReferenceRequest(_message.Message):
    __slots__ = ("monitor", "start_time", "end_time", "first_n")
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    FIRST_N_FIELD_NUMBER: _ClassVar[int]
    monitor: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    first_n: int
    def __init__(self, monitor: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_n: _Optional[int] = ...) -> None: ...

class SetReferenceResponse(_message.Message):
    __slots__ = ("reference_id", "size")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    size: int
    def __init__(self, reference_id: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ListRetrainEventsRequest(_message.Message):
    __slots__ = ("monitor", "page_size", "page_token")
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    monitor: str
    page_size: int
    page_token: str
    def __init__(self, monitor: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRetrainEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.RetrainEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.RetrainEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("route", "route_revision", "canary", "primary", "policy", "evidence", "state", "decisions")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_REVISION_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    route: str
    route_revision: int
    canary: _inference_pb2.DeploymentRef
    primary: _inference_pb2.DeploymentRef
    policy: _inference_pb2.RolloutPolicy
    evidence: _events_pb2.RolloutEvidence
    state: str
    decisions: _containers.RepeatedCompositeFieldContainer[_events_pb2.DeploymentEvent]
    def __init__(self, route: _Optional[str] = ..., route_revision: _Optional[int] = ..., canary: _Optional[_Union[_inference_pb2.DeploymentRef, _Mapping]] = ..., primary: _Optional[_Union[_inference_pb2.DeploymentRef, _Mapping]] = ..., policy: _Optional[_Union[_inference_pb2.RolloutPolicy, _Mapping]] = ..., evidence: _Optional[_Union[_events_pb2.RolloutEvidence, _Mapping]] = ..., state: _Optional[str] = ..., decisions: _Optional[_Iterable[_Union[_events_pb2.DeploymentEvent, _Mapping]]] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: str
    def __init__(self, route: _Optional[str] = ...) -> None: ...

class GetRolloutResponse(_message.Message):
    __slots__ = ("rollouts",)
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    rollouts: _containers.RepeatedCompositeFieldContainer[RolloutStatus]
    def __init__(self, rollouts: _Optional[_Iterable[_Union[RolloutStatus, _Mapping]]] = ...) -> None: ...
