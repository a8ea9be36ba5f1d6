"""Tracing service: consumes spans, completions, scores and feedback into the trace store."""
