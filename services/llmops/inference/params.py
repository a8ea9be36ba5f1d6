"""Validate generation parameters with TGI's rules and messages."""
from __future__ import annotations

import math

from llmops.common.errors import InvalidArgument
from llmops.backends.protocol import GenerationParams

MAX_STOP_SEQUENCES = 4  # TGI's default --max-stop-sequences


def validate_parameters(p, default_max_new_tokens: int) -> GenerationParams:
    """``p`` is a ``GenerationParameters`` protobuf."""
    max_new = p.max_new_tokens if p.HasField("max_new_tokens") else default_max_new_tokens
    if max_new <= 0:
        raise InvalidArgument(f"`max_new_tokens` must be strictly positive, got {max_new}")
    temperature = p.temperature if p.HasField("temperature") else None
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise InvalidArgument(f"`temperature` must be strictly positive and finite, got {temperature}")
    top_p = p.top_p if p.HasField("top_p") else None
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p < 1):
        raise InvalidArgument(f"`top_p` must be > 0.0 and < 1.0, got {top_p}")
    top_k = p.top_k if p.HasField("top_k") else None
    if top_k is not None and top_k <= 0:
        raise InvalidArgument(f"`top_k` must be strictly positive, got {top_k}")
    rep = p.repetition_penalty if p.HasField("repetition_penalty") else None
    if rep is not None and not (math.isfinite(rep) and rep > 0):
        raise InvalidArgument(f"`repetition_penalty` must be strictly positive and finite, got {rep}")
    stop = tuple(p.stop)
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidArgument(f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences, given {len(stop)}")
    if any(s == "" for s in stop):
        raise InvalidArgument("`stop` sequences must not be empty strings")
    return GenerationParams(
        max_new_tokens=max_new, temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=rep,
        stop=stop, seed=p.seed if p.HasField("seed") else None, do_sample=p.do_sample, details=p.details,
    )


def with_defaults(params: GenerationParams, defaults, explicit: frozenset[str] | None) -> GenerationParams:
    """``params`` with a deployment's ``defaults`` (a ``GenerationParameters``) where the request
    left a parameter unset. ``explicit``: the fields the client set (None: every parameter that is
    not None counts as set, and ``max_new_tokens`` too)."""
    from dataclasses import replace

    if defaults is None or not defaults.ListFields():
        return params
    out = {}
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "seed"):
        if getattr(params, name) is None and defaults.HasField(name):
            out[name] = getattr(defaults, name)
    if not params.stop and defaults.stop:
        out["stop"] = tuple(defaults.stop)
    if defaults.do_sample and not params.do_sample:
        out["do_sample"] = True
    if explicit is not None and "max_new_tokens" not in explicit and defaults.HasField("max_new_tokens"):
        out["max_new_tokens"] = defaults.max_new_tokens
    return replace(params, **out) if out else params
