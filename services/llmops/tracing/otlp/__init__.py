"""OTLP trace ingest: OTLP/gRPC and OTLP/HTTP receivers that turn an app's OpenTelemetry spans into
the platform's ``SpanEvent``s and, for LLM calls, ``CompletionEvent``s, on the same Kafka topics as
the platform's own traffic (so external calls are traced, judged online and watched for drift)."""
