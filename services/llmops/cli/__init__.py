"""The ``llmops`` command: running the platform, using it as a client, the demo, offline
evaluation, drift and the retrain listener. One module per concern; each lists its commands
in ``COMMANDS``. Nothing here is imported by a service: this is the top layer."""
from __future__ import annotations

import click

from llmops.cli import demo, deployments, dlq, drift, evaluation, generate, ingest, retrain_listener, running, traces


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """llmops: traced inference, RAG, online judging and drift monitors on Kafka."""


for _module in (running, generate, traces, ingest, demo, evaluation, drift, retrain_listener, deployments, dlq):
    for _command in _module.COMMANDS:
        main.add_command(_command)
