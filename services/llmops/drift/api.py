"""DriftService: protobuf in, one call of :class:`DriftEngine`, protobuf out (the monitors'
status, references, retrain events and canary rollouts)."""
from __future__ import annotations

from llmops.drift.engine import DriftEngine
from llmops.common.times import request_ts_us, us_to_ts
from llmops.drift.monitor import Monitor
from llmops.v1 import drift_pb2, drift_pb2_grpc


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
        monitors = await self.engine.status_of(request.monitor)
        return drift_pb2.GetStatusResponse(monitors=[self._status(m) for m in monitors])

    async def SetReference(self, request, context):
        start = request_ts_us(request, "start_time")
        end = request_ts_us(request, "end_time")
        ref = await self.engine.set_reference(request.monitor, start, end, request.first_n)
        return drift_pb2.SetReferenceResponse(reference_id=ref.reference_id, size=len(ref.rows))

    async def ListRetrainEvents(self, request, context):
        events, token = await self.engine.list_retrain_events(request.monitor, request.page_size, request.page_token)
        return drift_pb2.ListRetrainEventsResponse(events=events, next_page_token=token)

    async def GetRollout(self, request, context):
        return drift_pb2.GetRolloutResponse(rollouts=self.engine.rollout_status(request.route))
