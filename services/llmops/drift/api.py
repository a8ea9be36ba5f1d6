"""DriftService: the monitors' status, references and retrain events."""
from __future__ import annotations

import asyncio

from llmops.common.errors import InvalidArgument
from llmops.drift.engine import DriftEngine
from llmops.common.times import ts_to_us, us_to_ts
from llmops.drift.monitor import Monitor
from llmops.drift.store import InvalidPageToken
from llmops.v1 import drift_pb2, drift_pb2_grpc

MAX_PAGE = 500


class DriftServicer(drift_pb2_grpc.DriftServiceServicer):
    def __init__(self, engine: DriftEngine) -> None:
        self.engine = engine

    def _status(self, m: Monitor) -> drift_pb2.MonitorStatus:
        s = m.spec
        st = drift_pb2.MonitorStatus(
            monitor=s.name, consecutive_drifted=m.consecutive, scope=s.scope.describe(), window_size=s.window_size,
            window_seconds=s.window_seconds, method=s.method, current_window_count=len(m.current),
            retrain_events=m.retrain_count, quality_min=s.quality_min, consecutive_required=s.consecutive,
            recent_windows=list(reversed(m.recent)),
        )
        if m.reference is not None:
            st.reference_id, st.reference_size = m.reference.reference_id, len(m.reference.rows)
            st.reference_created_at.CopyFrom(us_to_ts(m.reference.created_us))
            st.reference_source = m.reference.source
        if m.last_retrain_us:
            st.last_retrain_at.CopyFrom(us_to_ts(m.last_retrain_us))
        return st

    async def GetStatus(self, request, context):
        monitors = [self.engine.monitor(request.monitor)] if request.monitor else list(self.engine.monitors.values())
        return drift_pb2.GetStatusResponse(monitors=[self._status(m) for m in monitors])

    async def SetReference(self, request, context):
        if not request.monitor:
            raise InvalidArgument(f"monitor is empty; monitors: {', '.join(sorted(self.engine.monitors))}")
        start = ts_to_us(request.start_time) if request.HasField("start_time") else 0
        end = ts_to_us(request.end_time) if request.HasField("end_time") else 0
        ref = await self.engine.set_reference(request.monitor, start, end, request.first_n)
        return drift_pb2.SetReferenceResponse(reference_id=ref.reference_id, size=len(ref.rows))

    async def ListRetrainEvents(self, request, context):
        size = request.page_size or 50
        if size < 0 or size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE}, got {request.page_size}")
        if request.monitor:
            self.engine.monitor(request.monitor)   # NOT_FOUND for a monitor that does not exist
        try:
            events, token = await asyncio.to_thread(self.engine.store.list_retrain, request.monitor, size,
                                                    request.page_token)
        except InvalidPageToken as exc:
            raise InvalidArgument(str(exc)) from None
        return drift_pb2.ListRetrainEventsResponse(events=events, next_page_token=token)
