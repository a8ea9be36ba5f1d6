"""The late join of one trace, pure: a :class:`JoinEntry` holds what the drift service has seen
of a trace id so far (its completion, judge scores and user feedback) and when its wait is over.
:func:`merge` adds one event to it, :func:`observation` closes it into the row a monitor sees.

The engine keeps the entries in its join table (:mod:`llmops.drift.join_table`, written through to
the drift store) as :meth:`JoinEntry.to_dict`, the JSON shape the faust table's changelog held
before (keys ``first``, ``due``, ``c``, ``s``, ``fb`` and, once a score came, ``meta``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from llmops.drift.features import Observation, feedback_column, score_column
from llmops.v1 import common_pb2, events_pb2

JoinEvent = events_pb2.CompletionEvent | events_pb2.ScoreEvent | events_pb2.FeedbackEvent


@dataclass(frozen=True)
class JoinEntry:
    """One trace in the join table. The functions here never change an entry (nor the dicts it
    holds): they return a new one."""
    first_us: int                      # when the first event of the trace arrived
    due_us: int                        # when the entry closes
    completion: dict | None = None     # the completion's :meth:`Observation.to_json`, once it came
    scores: dict[str, float] = field(default_factory=dict)               # score column -> value
    feedback: dict[str, dict[str, float]] = field(default_factory=dict)  # feedback column -> {feedback id: value}
    meta: dict | None = None           # model, prompt template and version, route, deployment (version), arm of the first score

    def to_dict(self) -> dict:
        """The entry as the join table stores it (JSON)."""
        out = {"first": self.first_us, "due": self.due_us, "c": self.completion, "s": self.scores,
               "fb": self.feedback}
        if self.meta is not None:
            out["meta"] = self.meta
        return out

    @classmethod
    def from_dict(cls, d: dict) -> JoinEntry:
        """An entry read back from the join table (or the store)."""
        return cls(first_us=d["first"], due_us=d["due"], completion=d["c"], scores=d["s"], feedback=d["fb"],
                   meta=d.get("meta"))


def new_entry(now_us: int, wait_us: int) -> JoinEntry:
    """The entry of a trace id seen for the first time at ``now_us``: it closes ``wait_us`` later."""
    return JoinEntry(first_us=now_us, due_us=now_us + wait_us)


def merge(entry: JoinEntry, event: JoinEvent, now_us: int, wait_us: int) -> JoinEntry:
    """``entry`` with ``event`` added. A completion restarts the wait (its scores come after it);
    an error or non-finite score, and a non-finite feedback, change nothing; a feedback is kept
    by its id, so a redelivered one counts once."""
    if isinstance(event, events_pb2.CompletionEvent):
        # the wait for its scores starts with the completion
        return replace(entry, completion=Observation.of_completion(event).to_json(), due_us=now_us + wait_us)
    if isinstance(event, events_pb2.ScoreEvent):
        if event.score.status == common_pb2.SCORE_STATUS_ERROR or not math.isfinite(event.score.value):
            return entry
        meta = entry.meta if entry.meta is not None else {
            "model": event.model, "prompt_template": event.prompt_template, "prompt_version": event.prompt_version,
            **{k: v for k, v in (("route", event.route), ("deployment", event.deployment),
                                 ("deployment_version", event.deployment_version), ("arm", event.arm)) if v}}
        column = score_column(event.score.name, event.tier)
        return replace(entry, scores={**entry.scores, column: float(event.score.value)}, meta=meta)
    if not math.isfinite(event.feedback.score):
        return entry
    col = feedback_column(event.feedback.name)
    by_id = {**entry.feedback.get(col, {}), event.feedback.id: float(event.feedback.score)}
    return replace(entry, feedback={**entry.feedback, col: by_id})


def observation(trace_id_key: bytes, entry: JoinEntry) -> Observation:
    """The closed entry as a monitor sees it: the completion with its scores and the mean of each
    feedback column, or, with no completion, an orphan row of scores that carries the model and
    prompt of its first score."""
    scores = dict(entry.scores)
    for col, by_id in entry.feedback.items():
        scores[col] = float(np.mean(list(by_id.values())))
    if entry.completion is not None:
        o = Observation.from_json(entry.completion)
        o.scores = scores
        return o
    meta = entry.meta or {}
    return Observation(trace_id=trace_id_key.decode(), ts_us=entry.first_us, has_completion=False, scores=scores,
                       model=meta.get("model", ""), prompt_template=meta.get("prompt_template", ""),
                       prompt_version=meta.get("prompt_version", 0), route=meta.get("route", ""),
                       deployment=meta.get("deployment", ""), deployment_version=meta.get("deployment_version", 0),
                       arm=meta.get("arm", ""))
