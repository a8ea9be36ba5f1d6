"""`make bench`: every benchmark, one after the other (they share the machine's two cores)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import drift, judging, request_path, trace_ingest, trace_store  # noqa: E402

if __name__ == "__main__":
    trace_ingest.run()
    trace_store.run()
    request_path.run()
    judging.run()
    drift.run()
