"""Shared plumbing for every llmops service: settings, event bus, gRPC bootstrap, metrics, logs."""
