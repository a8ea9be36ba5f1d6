"""The judging service: online LLM-as-judge scoring of every completion, on-demand scoring,
pairwise comparison and offline evaluation runs."""
