"""`make bench`: every benchmark, one after the other (they share the machine's two cores).

``python -m bench NAME ...`` runs only the named ones (e.g. ``python -m bench chaos``)."""
import sys

from bench import (chaos, drift, gateway, judging, otlp_ingest, request_path, rollback_detection, routing, soak,
                   trace_ingest, trace_store)

ALL = {"trace_ingest": trace_ingest, "trace_store": trace_store, "otlp_ingest": otlp_ingest,
       "request_path": request_path, "gateway": gateway, "routing": routing, "judging": judging, "drift": drift,
       "rollback_detection": rollback_detection, "chaos": chaos, "soak": soak}

if __name__ == "__main__":
    names = sys.argv[1:] or list(ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(ALL)}")
    for name in names:
        ALL[name].run()
