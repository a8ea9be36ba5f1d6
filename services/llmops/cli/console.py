"""What every command of the ``llmops`` CLI shares: its settings, its console, and how a failed
RPC is reported (the status code and the server's message, exit code 1)."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import grpc
from rich.markup import escape

from llmops.common.settings import Settings


def load_settings() -> Settings:
    """The settings of this command: ``LLMOPS_*`` from the environment."""
    return Settings()


def make_console():
    from rich.console import Console

    return Console(highlight=False)


def rpc_error_text(exc: grpc.RpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


@contextlib.contextmanager
def exit_on_rpc_error(console) -> Iterator[None]:
    """Print a failed RPC as ``CODE: message`` and exit 1, instead of a stack trace."""
    try:
        yield
    except grpc.RpcError as exc:
        console.print(f"[red]{escape(rpc_error_text(exc))}[/]")   # a message may quote "[...]": not markup
        sys.exit(1)
