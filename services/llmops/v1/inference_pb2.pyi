import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from llmops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetryOn(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRY_ON_UNSPECIFIED: _ClassVar[RetryOn]
    RETRY_ON_UNAVAILABLE: _ClassVar[RetryOn]
    RETRY_ON_TIMEOUT: _ClassVar[RetryOn]
    RETRY_ON_RATE_LIMITED: _ClassVar[RetryOn]
RETRY_ON_UNSPECIFIED: RetryOn
RETRY_ON_UNAVAILABLE: RetryOn
RETRY_ON_TIMEOUT: RetryOn
RETRY_ON_RATE_LIMITED: RetryOn

class GenerationParameters(_message.Message):
    __slots__ = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "stop", "seed", "do_sample", "details")
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DO_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    do_sample: bool
    details: bool
    def __init__(self, max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., repetition_penalty: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., do_sample: bool = ..., details: bool = ...) -> None: ...

class RetrievalOptions(_message.Message):
    __slots__ = ("enabled", "top_k", "alpha", "collection", "filters")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    top_k: int
    alpha: float
    collection: str
    filters: _containers.ScalarMap[str, str]
    def __init__(self, enabled: bool = ..., top_k: _Optional[int] = ..., alpha: _Optional[float] = ..., collection: _Optional[str] = ..., filters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "messages", "model", "parameters", "retrieval", "session_id", "user_id", "metadata", "prompt_template", "prompt_version")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    model: str
    parameters: GenerationParameters
    retrieval: RetrievalOptions
    session_id: str
    user_id: str
    metadata: _containers.ScalarMap[str, str]
    prompt_template: str
    prompt_version: int
    def __init__(self, prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., model: _Optional[str] = ..., parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., retrieval: _Optional[_Union[RetrievalOptions, _Mapping]] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., prompt_template: _Optional[str] = ..., prompt_version: _Optional[int] = ...) -> None: ...

class TokenLogprob(_message.Message):
    __slots__ = ("id", "text", "logprob")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    logprob: float
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ..., logprob: _Optional[float] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("trace_id", "text", "model", "finish_reason", "usage", "contexts", "latency_ms", "prompt_template", "prompt_version", "tokens", "deployment", "deployment_version", "arm", "attempts", "route_revision")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_REVISION_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    text: str
    model: str
    finish_reason: str
    usage: _common_pb2.Usage
    contexts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Context]
    latency_ms: float
    prompt_template: str
    prompt_version: int
    tokens: _containers.RepeatedCompositeFieldContainer[TokenLogprob]
    deployment: str
    deployment_version: int
    arm: str
    attempts: int
    route_revision: int
    def __init__(self, trace_id: _Optional[str] = ..., text: _Optional[str] = ..., model: _Optional[str] = ..., finish_reason: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., contexts: _Optional[_Iterable[_Union[_common_pb2.Context, _Mapping]]] = ..., latency_ms: _Optional[float] = ..., prompt_template: _Optional[str] = ..., prompt_version: _Optional[int] = ..., tokens: _Optional[_Iterable[_Union[TokenLogprob, _Mapping]]] = ..., deployment: _Optional[str] = ..., deployment_version: _Optional[int] = ..., arm: _Optional[str] = ..., attempts: _Optional[int] = ..., route_revision: _Optional[int] = ...) -> None: ...

class GenerateStreamResponse(_message.Message):
    __slots__ = ("trace_id", "token", "index", "final", "summary")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    token: str
    index: int
    final: bool
    summary: GenerateResponse
    def __init__(self, trace_id: _Optional[str] = ..., token: _Optional[str] = ..., index: _Optional[int] = ..., final: bool = ..., summary: _Optional[_Union[GenerateResponse, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "backend", "max_input_tokens", "max_total_tokens", "is_default")
    ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    id: str
    backend: str
    max_input_tokens: int
    max_total_tokens: int
    is_default: bool
    def __init__(self, id: _Optional[str] = ..., backend: _Optional[str] = ..., max_input_tokens: _Optional[int] = ..., max_total_tokens: _Optional[int] = ..., is_default: bool = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class PromptTemplate(_message.Message):
    __slots__ = ("name", "version", "system", "user", "labels", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    system: str
    user: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    created_at: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., system: _Optional[str] = ..., user: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., created_at: _Optional[str] = ...) -> None: ...

class ListPromptTemplatesRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPromptTemplatesResponse(_message.Message):
    __slots__ = ("templates",)
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[PromptTemplate]
    def __init__(self, templates: _Optional[_Iterable[_Union[PromptTemplate, _Mapping]]] = ...) -> None: ...

class RegisterPromptTemplateRequest(_message.Message):
    __slots__ = ("name", "system", "user", "labels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    system: str
    user: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., system: _Optional[str] = ..., user: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("name", "version", "backend", "url", "model_path", "remote_model", "default_parameters", "prompt_template", "prompt_version", "prompt_price_per_m", "completion_price_per_m", "timeout_s", "description", "created_by", "created_at", "api_key_env")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    REMOTE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_PRICE_PER_M_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_PRICE_PER_M_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ENV_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    backend: str
    url: str
    model_path: str
    remote_model: str
    default_parameters: GenerationParameters
    prompt_template: str
    prompt_version: int
    prompt_price_per_m: float
    completion_price_per_m: float
    timeout_s: float
    description: str
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    api_key_env: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., backend: _Optional[str] = ..., url: _Optional[str] = ..., model_path: _Optional[str] = ..., remote_model: _Optional[str] = ..., default_parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., prompt_template: _Optional[str] = ..., prompt_version: _Optional[int] = ..., prompt_price_per_m: _Optional[float] = ..., completion_price_per_m: _Optional[float] = ..., timeout_s: _Optional[float] = ..., description: _Optional[str] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., api_key_env: _Optional[str] = ...) -> None: ...

class DeploymentRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("attempts", "initial_backoff_s", "max_backoff_s", "multiplier", "retry_on")
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BACKOFF_S_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_S_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    RETRY_ON_FIELD_NUMBER: _ClassVar[int]
    attempts: int
    initial_backoff_s: float
    max_backoff_s: float
    multiplier: float
    retry_on: _containers.RepeatedScalarFieldContainer[RetryOn]
    def __init__(self, attempts: _Optional[int] = ..., initial_backoff_s: _Optional[float] = ..., max_backoff_s: _Optional[float] = ..., multiplier: _Optional[float] = ..., retry_on: _Optional[_Iterable[_Union[RetryOn, str]]] = ...) -> None: ...

class CircuitBreaker(_message.Message):
    __slots__ = ("failure_threshold", "cooldown_s")
    FAILURE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_S_FIELD_NUMBER: _ClassVar[int]
    failure_threshold: int
    cooldown_s: float
    def __init__(self, failure_threshold: _Optional[int] = ..., cooldown_s: _Optional[float] = ...) -> None: ...

class RolloutPolicy(_message.Message):
    __slots__ = ("score", "tier", "min_samples", "max_samples", "max_drop", "alpha", "max_error_rate", "max_latency_ratio", "auto_promote")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_DROP_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_RATIO_FIELD_NUMBER: _ClassVar[int]
    AUTO_PROMOTE_FIELD_NUMBER: _ClassVar[int]
    score: str
    tier: str
    min_samples: int
    max_samples: int
    max_drop: float
    alpha: float
    max_error_rate: float
    max_latency_ratio: float
    auto_promote: bool
    def __init__(self, score: _Optional[str] = ..., tier: _Optional[str] = ..., min_samples: _Optional[int] = ..., max_samples: _Optional[int] = ..., max_drop: _Optional[float] = ..., alpha: _Optional[float] = ..., max_error_rate: _Optional[float] = ..., max_latency_ratio: _Optional[float] = ..., auto_promote: bool = ...) -> None: ...

class Canary(_message.Message):
    __slots__ = ("deployment", "percent", "sticky", "policy")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    STICKY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    deployment: DeploymentRef
    percent: float
    sticky: str
    policy: RolloutPolicy
    def __init__(self, deployment: _Optional[_Union[DeploymentRef, _Mapping]] = ..., percent: _Optional[float] = ..., sticky: _Optional[str] = ..., policy: _Optional[_Union[RolloutPolicy, _Mapping]] = ...) -> None: ...

class Shadow(_message.Message):
    __slots__ = ("deployment", "percent")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    deployment: DeploymentRef
    percent: float
    def __init__(self, deployment: _Optional[_Union[DeploymentRef, _Mapping]] = ..., percent: _Optional[float] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("name", "revision", "primary", "fallbacks", "retry", "attempt_timeout_s", "deadline_s", "circuit", "canary", "shadow", "changed_by", "reason", "created_at", "restored_from")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FROM_FIELD_NUMBER: _ClassVar[int]
    name: str
    revision: int
    primary: DeploymentRef
    fallbacks: _containers.RepeatedCompositeFieldContainer[DeploymentRef]
    retry: RetryPolicy
    attempt_timeout_s: float
    deadline_s: float
    circuit: CircuitBreaker
    canary: Canary
    shadow: Shadow
    changed_by: str
    reason: str
    created_at: _timestamp_pb2.Timestamp
    restored_from: int
    def __init__(self, name: _Optional[str] = ..., revision: _Optional[int] = ..., primary: _Optional[_Union[DeploymentRef, _Mapping]] = ..., fallbacks: _Optional[_Iterable[_Union[DeploymentRef, _Mapping]]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., attempt_timeout_s: _Optional[float] = ..., deadline_s: _Optional[float] = ..., circuit: _Optional[_Union[CircuitBreaker, _Mapping]] = ..., canary: _Optional[_Union[Canary, _Mapping]] = ..., shadow: _Optional[_Union[Shadow, _Mapping]] = ..., changed_by: _Optional[str] = ..., reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., restored_from: _Optional[int] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("name", "all_versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    all_versions: bool
    def __init__(self, name: _Optional[str] = ..., all_versions: bool = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments",)
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    def __init__(self, deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ...) -> None: ...

class SetRouteRequest(_message.Message):
    __slots__ = ("route", "changed_by", "reason", "expected_revision")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    route: Route
    changed_by: str
    reason: str
    expected_revision: int
    def __init__(self, route: _Optional[_Union[Route, _Mapping]] = ..., changed_by: _Optional[str] = ..., reason: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class GetRouteRequest(_message.Message):
    __slots__ = ("name", "revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    revision: int
    def __init__(self, name: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class ListRoutesRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("route", "to_revision", "changed_by", "reason")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    TO_REVISION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    route: str
    to_revision: int
    changed_by: str
    reason: str
    def __init__(self, route: _Optional[str] = ..., to_revision: _Optional[int] = ..., changed_by: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SetPromptLabelRequest(_message.Message):
    __slots__ = ("name", "version", "label")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    label: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...
