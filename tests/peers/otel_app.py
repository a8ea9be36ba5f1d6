"""A RAG app instrumented the way our users instrument theirs, run with the peer venv's python
(.peers/otel): the official OpenTelemetry SDK and OTLP exporter, an unmodified instrumentation of
the official ``openai`` client, and a retrieval span of its own in that instrumentation's
convention. It answers one question from one context with a real OpenAI-compatible server and
prints a JSON line: {"trace_id", "answer"}.

    otel_app.py --instrumentation openai-v2|openinference --transport grpc|http
                --endpoint URL --base-url URL --question Q --context C [--gzip] [--stream]
"""
from __future__ import annotations

import argparse
import json
import os


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--instrumentation", choices=["openai-v2", "openinference"], required=True)
    p.add_argument("--transport", choices=["grpc", "http"], required=True)
    p.add_argument("--endpoint", required=True, help="grpc: host:port; http: http://host:port/v1/traces")
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--question", required=True)
    p.add_argument("--context", required=True)
    p.add_argument("--session", default="")
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--stream", action="store_true")
    args = p.parse_args()

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if args.transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression

        exporter = OTLPSpanExporter(endpoint=args.endpoint, insecure=True,
                                    compression=Compression.Gzip if args.gzip else None)
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=args.endpoint,
                                    compression=Compression.Gzip if args.gzip else Compression.NoCompression)
    provider = TracerProvider(resource=Resource.create({"service.name": "peer-rag-app"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("peer-rag-app")

    if args.instrumentation == "openai-v2":
        # prompt and answer text on the span (the instrumentation's default is no content)
        os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
        import httpx2

        httpx2.alias_httpx()   # openai 3 ships httpx2; openai-v2 imports `httpx` (the official shim)
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    else:
        from openinference.instrumentation.openai import OpenAIInstrumentor
    OpenAIInstrumentor().instrument(tracer_provider=provider)

    import openai

    client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0)
    documents = [{"id": "doc-1", "score": 0.92, "content": args.context}]
    with tracer.start_as_current_span("rag", attributes={"session.id": args.session} if args.session else {}) as root:
        if args.instrumentation == "openai-v2":
            # GenAI's retrieval span, as opentelemetry-util-genai records it
            attrs = {"gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": "kb",
                     "gen_ai.retrieval.query.text": args.question, "gen_ai.retrieval.documents": json.dumps(documents)}
        else:
            attrs = {"openinference.span.kind": "RETRIEVER", "input.value": args.question,
                     "retrieval.documents.0.document.id": "doc-1", "retrieval.documents.0.document.score": 0.92,
                     "retrieval.documents.0.document.content": args.context}
        with tracer.start_as_current_span("retrieve kb", attributes=attrs):
            pass
        messages = [{"role": "system", "content": "Answer from the context in one sentence."},
                    {"role": "user", "content": f"Context: {args.context}\n\nQuestion: {args.question}"}]
        if args.stream:
            chunks = client.chat.completions.create(model=args.model, messages=messages, max_tokens=48, temperature=0,
                                                    stream=True, stream_options={"include_usage": True})
            answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            resp = client.chat.completions.create(model=args.model, messages=messages, max_tokens=48, temperature=0)
            answer = resp.choices[0].message.content or ""
        trace_id = format(root.get_span_context().trace_id, "032x")
    if not provider.force_flush(30_000):
        raise SystemExit("the spans were not exported within 30 s")
    provider.shutdown()
    print(json.dumps({"trace_id": trace_id, "answer": answer}))


if __name__ == "__main__":
    main()
