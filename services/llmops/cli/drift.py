"""``llmops drift report|reference|events``: the drift monitors' status and Evidently reports,
their references, and the retrain events they fired."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from llmops.cli.client import Client
from llmops.cli.console import exit_on_rpc_error, load_settings, make_console


def _stub():
    return Client(load_settings()).drift


def _when(ts) -> str:
    if not ts.seconds:
        return "-"
    return dt.datetime.fromtimestamp(ts.seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def print_status(console, monitors, windows: int = 5) -> None:
    """The drift summary: each monitor's reference, its last windows and what drifted."""
    from rich.table import Table

    for st in monitors:
        ref = (f"{st.reference_id} ({st.reference_size} completions; {st.reference_source})"
               if st.reference_id else f"none yet: the first window of {st.window_size} becomes it")
        quality = ", ".join(f"{k.removeprefix('score_')}≥{v:g}" for k, v in sorted(st.quality_min.items())) or "none"
        console.print(f"[bold]monitor {st.monitor}[/]  scope: {st.scope or 'all traffic'}  window: {st.window_size}"
                      f"{f' or {st.window_seconds:g}s' if st.window_seconds else ''}  method: {st.method}  "
                      f"policy: {st.consecutive_required} drifted windows in a row, quality {quality}")
        console.print(f"  reference: {ref}")
        console.print(f"  open window: {st.current_window_count} completions; drifted in a row: "
                      f"{st.consecutive_drifted}; retrain events: {st.retrain_events} (last {_when(st.last_retrain_at)})")
        if not st.recent_windows:
            continue
        table = Table(show_lines=False)
        for col in ("window", "ended", "size", "drift", "share", "drifted features", "score means"):
            table.add_column(col, overflow="fold")
        for w in list(st.recent_windows)[:windows]:
            drifted = [f"{f.feature} ({'p=%.3g' % f.p_value if 'p_value' in f.method else '%.3g' % f.statistic})"
                       for f in w.features if f.drifted]
            means = ", ".join(f"{k.removeprefix('score_')}={v:.2f}" for k, v in sorted(w.score_means.items())
                              if not k.endswith("_llm"))
            table.add_row(w.report_id, _when(w.window_end), str(w.window_size),
                          "[red]yes[/]" if w.drift_detected else "[green]no[/]", f"{w.drift_share:.2f}",
                          ", ".join(drifted) or "-", means or "-")
        console.print(table)
        console.print(f"  Evidently report of the newest window: {st.recent_windows[0].report_path}")


def print_retrain(console, ev) -> None:
    console.print(f"[bold red]retrain event {ev.id}[/] monitor={ev.monitor} at {_when(ev.created_at)}")
    console.print(f"  reason: {ev.reason}")
    if ev.causes:
        console.print(f"  causes: {', '.join(ev.causes)}")
    console.print(f"  window: {_when(ev.window.start)} .. {_when(ev.window.end)} ({ev.window.count} completions), "
                  f"reference {ev.reference_id}")
    for f in ev.evidence:
        stat = f"p={f.p_value:.3g}" if "p_value" in f.method else f"{f.statistic:.3g}"
        console.print(f"  drifted: {f.feature} {stat} (threshold {f.threshold:g}, {f.method})")
    for q in ev.quality:
        console.print(f"  quality: {q.score} {'[red]dropped[/]' if q.dropped else 'held'}: window {q.window_mean:.3f} "
                      f"(n={q.window_n}) vs reference {q.reference_mean:.3f} (n={q.reference_n}), {q.test} "
                      f"p={q.p_value:.2g} (alpha {q.alpha:.2g}), drop {q.mean_drop:.3f}, d={q.effect_size:.2f}")
    console.print(f"  sample traces: {len(ev.trace_ids)}; low-scored traces (training candidates): "
                  f"{len(ev.low_score_trace_ids)}")


@click.group("drift")
def drift_group() -> None:
    """Drift monitors: status, reports, references, retrain events."""


@drift_group.command("report")
@click.option("--monitor", default="", help="One monitor (default: all).")
@click.option("--windows", type=int, default=5, show_default=True, help="Recent windows to list.")
@click.option("--json", "as_json", is_flag=True, help="Print GetStatus as JSON.")
@click.option("--open", "open_report", is_flag=True, help="Open the newest Evidently report in a browser.")
def drift_report(monitor, windows, as_json, open_report) -> None:
    """Each monitor's reference and last windows; the newest report's HTML path, to open."""
    from google.protobuf.json_format import MessageToDict

    from llmops.v1 import drift_pb2

    console = make_console()
    with exit_on_rpc_error(console):
        resp = _stub().GetStatus(drift_pb2.GetStatusRequest(monitor=monitor), timeout=10)
    if as_json:
        click.echo(json.dumps(MessageToDict(resp, preserving_proto_field_name=True), indent=2))
        return
    print_status(console, resp.monitors, windows)
    if open_report:
        import webbrowser

        for st in resp.monitors:
            if st.recent_windows:
                webbrowser.open(Path(st.recent_windows[0].report_path).resolve().as_uri())


@drift_group.command("reference")
@click.argument("monitor")
@click.option("--first-n", type=int, default=0, help="The first N completions the monitor saw.")
@click.option("--since", default="", help="Start of a time range (ISO 8601, UTC if no zone).")
@click.option("--until", default="", help="End of the time range (exclusive).")
def drift_reference(monitor, first_n, since, until) -> None:
    """Set a monitor's reference: the first N completions, or a time range."""
    from llmops.v1 import drift_pb2

    console = make_console()
    req = drift_pb2.SetReferenceRequest(monitor=monitor, first_n=first_n)
    for value, field in ((since, req.start_time), (until, req.end_time)):
        if value:
            when = dt.datetime.fromisoformat(value)
            field.FromDatetime(when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc))
    with exit_on_rpc_error(console):
        resp = _stub().SetReference(req, timeout=60)
    console.print(f"monitor {monitor}: reference {resp.reference_id} ({resp.size} completions)")


@drift_group.command("events")
@click.option("--monitor", default="")
@click.option("--limit", type=int, default=20, show_default=True)
def drift_events(monitor, limit) -> None:
    """Retrain events, newest first."""
    from llmops.v1 import drift_pb2

    console = make_console()
    with exit_on_rpc_error(console):
        resp = _stub().ListRetrainEvents(drift_pb2.ListRetrainEventsRequest(monitor=monitor, page_size=limit),
                                         timeout=10)
    if not resp.events:
        console.print("no retrain events")
    for ev in resp.events:
        print_retrain(console, ev)


COMMANDS = (drift_group,)
