"""`make bench`: every benchmark, one after the other (they share the machine's two cores)."""
from bench import (drift, gateway, judging, otlp_ingest, request_path, rollback_detection, routing, trace_ingest,
                   trace_store)

if __name__ == "__main__":
    trace_ingest.run()
    trace_store.run()
    otlp_ingest.run()
    request_path.run()
    gateway.run()
    routing.run()
    judging.run()
    drift.run()
    rollback_detection.run()
