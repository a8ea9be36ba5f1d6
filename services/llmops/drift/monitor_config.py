"""What a drift monitor is configured with: its scope (the traffic it watches) and its
:class:`MonitorSpec` (window, method, retrain policy, quality rules, reports kept), read from the
``LLMOPS_DRIFT_*`` settings or the ``LLMOPS_DRIFT_CONFIG`` file."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from llmops.common.settings import Settings
from llmops.drift.features import Observation, quality_column
from llmops.drift.quality import QUALITY_TESTS
from llmops.drift.window_report import EMBEDDING_METHODS

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
MAX_CONSECUTIVE = 20   # a drift streak is counted over the recent windows a monitor keeps (monitor.RECENT_WINDOWS)


@dataclass(frozen=True)
class Scope:
    """The traffic a monitor watches; empty fields match everything."""
    model: str = ""
    prompt_template: str = ""
    prompt_version: int = 0
    metadata: tuple[tuple[str, str], ...] = ()
    deployment: str = ""              # the deployment that answered (any arm: primary, canary, shadow)
    deployment_version: int = 0       # 0 = every version of it

    def matches(self, obs: Observation) -> bool:
        return ((not self.model or obs.model == self.model)
                and (not self.prompt_template or obs.prompt_template == self.prompt_template)
                and (not self.prompt_version or obs.prompt_version == self.prompt_version)
                and (not self.deployment or obs.deployment == self.deployment)
                and (not self.deployment_version or obs.deployment_version == self.deployment_version)
                and all(obs.metadata.get(k) == v for k, v in self.metadata))

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("model", self.model), ("prompt_template", self.prompt_template),
                                          ("prompt_version", self.prompt_version or ""),
                                          ("deployment", self.deployment),
                                          ("deployment_version", self.deployment_version or "")) if v]
        parts += [f"metadata.{k}={v}" for k, v in self.metadata]
        return " ".join(parts)


@dataclass(frozen=True)
class MonitorSpec:
    name: str
    scope: Scope = Scope()
    window_size: int = 200
    window_seconds: float = 0.0
    min_window: int = 30
    method: str = "mmd"
    method_options: dict = field(default_factory=dict)
    embedding_plot: bool = False      # the embedding drift in Evidently's report, with its t-SNE map (slow)
    drift_share: float = 0.5
    consecutive: int = 2
    cooldown_s: float = 3600.0        # per cause: a cause that fired is silent this long; another one is not
    # quality rules: each score's window against the reference's (see llmops.drift.quality)
    quality_scores: tuple[str, ...] = ("score_faithfulness", "score_answer_relevancy", "score_context_relevancy")
    quality_test: str = "welch"       # "welch" or "mann-whitney", one-sided
    quality_alpha: float = 0.001      # per window, over all its scores (Holm)
    quality_min_drop: float = 0.05    # and the window mean at least this far below the reference's
    quality_min_effect: float = 0.3   # and Cohen's d of the drop at least this
    quality_min_n: int = 20           # scores on each side for a score to be tested
    quality_min: dict[str, float] = field(default_factory=dict)  # opt-in absolute floors: column -> lowest window mean
    keep_reports: int = 50


def parse_quality(text: str) -> dict[str, float]:
    """``"faithfulness=0.3,feedback_user=0.5"`` → ``{"score_faithfulness": 0.3, "feedback_user": 0.5}``."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[quality_column(key.strip())] = float(value)
        except ValueError:
            raise ValueError(f"quality rule {part!r} is not score=min_mean (e.g. faithfulness=0.3)") from None
    return out


def parse_scores(value) -> tuple[str, ...]:
    """``"faithfulness, feedback_user"`` (or a list of them) → ``("score_faithfulness", "feedback_user")``."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(quality_column(str(k).strip()) for k in items if str(k).strip()))


def load_specs(settings: Settings) -> list[MonitorSpec]:
    """The monitors: ``LLMOPS_DRIFT_CONFIG`` if set (``{"monitors": [...]}``, each field
    defaulting to the ``LLMOPS_DRIFT_*`` settings), else one monitor ``default`` over all traffic."""
    base = MonitorSpec(
        name="default", window_size=settings.drift_window_size, window_seconds=settings.drift_window_seconds,
        min_window=settings.drift_min_window, method=settings.drift_method, drift_share=settings.drift_share,
        embedding_plot=settings.drift_embedding_plot,
        consecutive=settings.drift_consecutive, cooldown_s=settings.drift_cooldown_s,
        quality_scores=parse_scores(settings.drift_quality_scores), quality_test=settings.drift_quality_test,
        quality_alpha=settings.drift_quality_alpha, quality_min_drop=settings.drift_quality_min_drop,
        quality_min_effect=settings.drift_quality_min_effect, quality_min_n=settings.drift_quality_min_n,
        quality_min=parse_quality(settings.drift_quality_min), keep_reports=settings.drift_keep_reports,
    )
    _check(base)
    if not settings.drift_config:
        return [base]
    try:
        raw = json.loads(Path(settings.drift_config).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"LLMOPS_DRIFT_CONFIG {settings.drift_config}: {exc}") from None
    specs = [spec_from_dict(m, base) for m in raw.get("monitors", [])]
    names = [s.name for s in specs]
    if not specs:
        raise ValueError(f"LLMOPS_DRIFT_CONFIG {settings.drift_config} lists no monitors")
    if len(set(names)) != len(names):
        raise ValueError(f"LLMOPS_DRIFT_CONFIG {settings.drift_config}: monitor names repeat: {names}")
    return specs


SPEC_KEYS = {"name", "scope", "window_size", "window_seconds", "min_window", "method", "method_options", "embedding_plot",
             "drift_share", "consecutive", "cooldown_s", "quality_scores", "quality_test", "quality_alpha",
             "quality_min_drop", "quality_min_effect", "quality_min_n", "quality_min", "keep_reports"}


SCOPE_KEYS = {"model", "prompt_template", "prompt_version", "metadata", "deployment", "deployment_version"}


def spec_from_dict(d: dict, base: MonitorSpec) -> MonitorSpec:
    unknown = set(d) - SPEC_KEYS
    if unknown:
        raise ValueError(f"drift monitor {d.get('name')!r}: unknown keys {sorted(unknown)}; known: {sorted(SPEC_KEYS)}")
    name = str(d.get("name", ""))
    if not NAME.match(name):
        raise ValueError(f"drift monitor name {name!r} must be 1-100 letters, digits, '.', '_' or '-'")
    sc = d.get("scope", {}) or {}
    unknown_scope = set(sc) - SCOPE_KEYS
    if unknown_scope:
        raise ValueError(f"drift monitor {name!r}: unknown scope keys {sorted(unknown_scope)}; known: {sorted(SCOPE_KEYS)}")
    try:
        scope = Scope(model=str(sc.get("model", "")), prompt_template=str(sc.get("prompt_template", "")),
                      prompt_version=int(sc.get("prompt_version", 0)),
                      metadata=tuple(sorted((str(k), str(v)) for k, v in (sc.get("metadata") or {}).items())),
                      deployment=str(sc.get("deployment", "")), deployment_version=int(sc.get("deployment_version", 0)))
    except (TypeError, ValueError):
        raise ValueError(f"drift monitor {name!r}: prompt_version and deployment_version must be integers, "
                         f"got {sc.get('prompt_version')!r} and {sc.get('deployment_version')!r}") from None
    if scope.deployment_version and not scope.deployment:
        raise ValueError(f"drift monitor {name!r}: scope deployment_version {scope.deployment_version} needs a deployment")
    quality = d.get("quality_min")
    scores = d.get("quality_scores")
    try:
        spec = replace(base, name=name, scope=scope,
                       quality_min=base.quality_min if quality is None else {quality_column(k): float(v) for k, v in quality.items()},
                       quality_scores=base.quality_scores if scores is None else parse_scores(scores),
                       **{k: type(getattr(base, k))(d[k]) for k in SPEC_KEYS - {"name", "scope", "quality_min", "quality_scores"}
                          if k in d})
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"drift monitor {name!r}: {exc}") from None
    _check(spec)
    return spec


def _check(spec: MonitorSpec) -> None:
    name = spec.name
    if spec.method not in EMBEDDING_METHODS:
        raise ValueError(f"drift monitor {name!r}: method {spec.method!r} is not one of {', '.join(EMBEDDING_METHODS)}")
    if spec.window_size < 10 or spec.consecutive < 1 or not 0 < spec.drift_share <= 1:
        raise ValueError(f"drift monitor {name!r}: window_size >= 10, consecutive >= 1 and 0 < drift_share <= 1")
    if spec.consecutive > MAX_CONSECUTIVE:
        raise ValueError(f"drift monitor {name!r}: consecutive {spec.consecutive} is more than the "
                         f"{MAX_CONSECUTIVE} recent windows a monitor keeps")
    if spec.quality_test not in QUALITY_TESTS:
        raise ValueError(f"drift monitor {name!r}: quality_test {spec.quality_test!r} is not one of "
                         f"{', '.join(QUALITY_TESTS)}")
    if not 0 < spec.quality_alpha < 1 or spec.quality_min_drop < 0 or spec.quality_min_effect < 0 or spec.quality_min_n < 2:
        raise ValueError(f"drift monitor {name!r}: 0 < quality_alpha < 1, quality_min_drop >= 0, "
                         f"quality_min_effect >= 0 and quality_min_n >= 2")
