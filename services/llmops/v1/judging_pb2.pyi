from llmops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreRequest(_message.Message):
    __slots__ = ("question", "answer", "contexts", "reference", "evaluators", "trace_id")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    EVALUATORS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    question: str
    answer: str
    contexts: _containers.RepeatedScalarFieldContainer[str]
    reference: str
    evaluators: _containers.RepeatedScalarFieldContainer[str]
    trace_id: str
    def __init__(self, question: _Optional[str] = ..., answer: _Optional[str] = ..., contexts: _Optional[_Iterable[str]] = ..., reference: _Optional[str] = ..., evaluators: _Optional[_Iterable[str]] = ..., trace_id: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("scores",)
    SCORES_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[_common_pb2.Score]
    def __init__(self, scores: _Optional[_Iterable[_Union[_common_pb2.Score, _Mapping]]] = ...) -> None: ...

class EvaluatorInfo(_message.Message):
    __slots__ = ("name", "version", "tier", "description", "settings", "metric", "needs_reference", "scale", "needs_contexts")
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    NEEDS_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    NEEDS_CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    tier: str
    description: str
    settings: _containers.ScalarMap[str, str]
    metric: str
    needs_reference: bool
    scale: str
    needs_contexts: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., tier: _Optional[str] = ..., description: _Optional[str] = ..., settings: _Optional[_Mapping[str, str]] = ..., metric: _Optional[str] = ..., needs_reference: bool = ..., scale: _Optional[str] = ..., needs_contexts: bool = ...) -> None: ...

class ListEvaluatorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListEvaluatorsResponse(_message.Message):
    __slots__ = ("evaluators",)
    EVALUATORS_FIELD_NUMBER: _ClassVar[int]
    evaluators: _containers.RepeatedCompositeFieldContainer[EvaluatorInfo]
    def __init__(self, evaluators: _Optional[_Iterable[_Union[EvaluatorInfo, _Mapping]]] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("question", "answer_a", "answer_b", "contexts", "reference")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_A_FIELD_NUMBER: _ClassVar[int]
    ANSWER_B_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    question: str
    answer_a: str
    answer_b: str
    contexts: _containers.RepeatedScalarFieldContainer[str]
    reference: str
    def __init__(self, question: _Optional[str] = ..., answer_a: _Optional[str] = ..., answer_b: _Optional[str] = ..., contexts: _Optional[_Iterable[str]] = ..., reference: _Optional[str] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("winner", "consistent", "winner_ab", "winner_ba", "p_a", "p_b", "p_tie", "judge_model", "usage")
    WINNER_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    WINNER_AB_FIELD_NUMBER: _ClassVar[int]
    WINNER_BA_FIELD_NUMBER: _ClassVar[int]
    P_A_FIELD_NUMBER: _ClassVar[int]
    P_B_FIELD_NUMBER: _ClassVar[int]
    P_TIE_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    winner: str
    consistent: bool
    winner_ab: str
    winner_ba: str
    p_a: float
    p_b: float
    p_tie: float
    judge_model: str
    usage: _common_pb2.Usage
    def __init__(self, winner: _Optional[str] = ..., consistent: bool = ..., winner_ab: _Optional[str] = ..., winner_ba: _Optional[str] = ..., p_a: _Optional[float] = ..., p_b: _Optional[float] = ..., p_tie: _Optional[float] = ..., judge_model: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ...) -> None: ...
