"""Running the platform: ``llmops serve SERVICE``, ``broker``, ``up``, ``status`` and ``health``."""
from __future__ import annotations

import asyncio
import importlib
import sys
import time
from typing import Awaitable, Callable

import click

from llmops.cli.console import load_settings, make_console
from llmops.cli.stack import Stack, StackError, health_status
from llmops.common.settings import SERVICES, Settings
from llmops.common.signals import install_stop_signals

#: each service's composition root (a module with ``async build(settings) -> ServiceParts``)
SERVICE_MODULES = {name: f"llmops.{name}.main" for name in SERVICES}

#: what ``run_stack`` runs once every service is SERVING; False stops the stack afterwards
AfterStart = Callable[[Stack, asyncio.Event], Awaitable[bool]]


@click.command()
@click.argument("service", type=click.Choice(sorted(SERVICE_MODULES)))
def serve(service: str) -> None:
    """Run one service in the foreground (``llmops up`` runs them all)."""
    from llmops.common.runtime import run_service

    build = importlib.import_module(SERVICE_MODULES[service]).build
    # non-zero when its watchdog ended it (a dead or stuck consumer, a reset broker): codes in llmops.common.watchdog
    sys.exit(asyncio.run(run_service(service, load_settings(), build, owns_process=True)))


@click.command()
def broker() -> None:
    """Run the embedded Kafka broker (Tansu) in the foreground."""
    from llmops.common.broker import EmbeddedBroker

    s = load_settings()

    async def run() -> None:
        b = EmbeddedBroker(s.kafka_embedded_port)
        await b.start()
        click.echo(f"embedded Kafka broker on {b.bootstrap} (Ctrl-C stops it)")
        stop = asyncio.Event()
        install_stop_signals(stop)
        await stop.wait()
        b.stop()

    asyncio.run(run())


async def run_stack(console, settings: Settings, after_start: AfterStart | None = None) -> int:
    """Start the broker and every service, show their status, run ``after_start``, then supervise
    them (restarts with backoff) until Ctrl-C, or until one keeps failing; stop everything. The exit
    code: 0, or 1 when the stack gave up."""
    stack = Stack(settings, on_progress=lambda m: console.print(f"[dim]•[/] {m}"))
    stop = asyncio.Event()
    install_stop_signals(stop)
    code = 0
    try:
        t0 = time.monotonic()
        await stack.start()
        console.print(f"[green]platform up[/] in {time.monotonic() - t0:.1f}s")
        print_status(console, settings, await status_rows(settings))
        keep_running = True
        if after_start is not None:
            keep_running = await after_start(stack, stop)
        if keep_running and not stop.is_set():
            console.print("running; Ctrl-C stops every service")
            report = await stack.watch(stop)
            if report:
                console.print(f"[red]{report}[/]")
                code = 1
            if stack.restart_count:
                console.print(f"{stack.restart_count} restart(s): " + ", ".join(
                    f"{name} {r.total}" for name, r in stack.restarts.items() if r.total))
    except StackError as exc:
        console.print(f"[red]{exc}[/]")
        code = 1
    finally:
        console.print("stopping…")
        await stack.stop()
        console.print("stopped")
    return code


@click.command()
def up() -> None:
    """Start the broker and every service, each in its own process; Ctrl-C stops them all."""
    sys.exit(asyncio.run(run_stack(make_console(), load_settings())))


async def status_rows(s: Settings) -> list[tuple[str, str, str]]:
    """(component, address, health) of the broker and of every service."""
    from llmops.common.broker import kafka_answers

    rows = [("kafka", s.bootstrap_servers, "SERVING" if await kafka_answers(s.bootstrap_servers) else "UNREACHABLE")]
    for name in SERVICES:
        rows.append((name, s.grpc_target(name), await health_status(s.grpc_target(name), 2.0)))
    return rows


def print_status(console, s: Settings, rows: list[tuple[str, str, str]]) -> bool:
    """Print the table; True when everything is SERVING."""
    from rich.table import Table

    table = Table(title="llmops status")
    for col in ("component", "address", "health", "metrics"):
        table.add_column(col)
    colors = {"SERVING": "green", "NOT_SERVING": "yellow", "UNREACHABLE": "red"}
    for name, addr, state in rows:
        metrics = f"http://{s.host}:{s.metrics_port(name)}/metrics" if name != "kafka" else ""
        table.add_row(name, addr, f"[{colors.get(state, 'dim')}]{state}[/]", metrics)
    console.print(table)
    return all(st == "SERVING" for _, _, st in rows)


@click.command()
def status() -> None:
    """Health of the broker and of every service."""
    s = load_settings()
    sys.exit(0 if print_status(make_console(), s, asyncio.run(status_rows(s))) else 1)


@click.command()
@click.argument("service", type=click.Choice(sorted(SERVICE_MODULES)))
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds to wait for an answer.")
def health(service: str, timeout: float) -> None:
    """Exit 0 when SERVICE answers SERVING to the gRPC health check (container healthchecks use it)."""
    s = load_settings()
    state = asyncio.run(health_status(s.grpc_target(service), timeout))
    click.echo(f"{service} {s.grpc_target(service)} {state}")
    sys.exit(0 if state == "SERVING" else 1)


COMMANDS = (serve, broker, up, status, health)
