"""Generated from protos/llmops/v1 by `make proto`. Do not edit by hand."""
