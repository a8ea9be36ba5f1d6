"""``llmops trace``, ``traces`` and ``feedback``: read what the platform recorded, and add a
user's verdict to it."""
from __future__ import annotations

import click

from llmops.cli.client import Client
from llmops.cli.console import exit_on_rpc_error, load_settings, make_console


def score_values(scores) -> dict[str, float]:
    """One value per score name (OK scores only); the cheap tier's when both tiers wrote one."""
    out: dict[str, float] = {}
    for sc in scores:
        if sc.status != 2 and (sc.name not in out or not sc.evaluator.endswith(".llm")):
            out[sc.name] = sc.value
    return out


def span_tree(spans):
    """The spans of a trace as a rich tree, children under their parent."""
    from rich.tree import Tree

    children: dict[str, list] = {}
    for sp in spans:
        children.setdefault(sp.parent_span_id, []).append(sp)
    ids = {sp.span_id for sp in spans}
    tree = Tree("spans")

    def add(node, sp):
        ms = (sp.end_time.ToNanoseconds() - sp.start_time.ToNanoseconds()) / 1e6
        ok = {0: "unset", 1: "[green]ok[/]", 2: "[red]error[/]"}[sp.status]
        attrs = " ".join(f"{k}={v[:60]}" for k, v in sorted(sp.attributes.items()))
        branch = node.add(f"{sp.name} [dim]{sp.service}[/] {ms:.1f} ms {ok} [dim]{attrs}[/]")
        for c in children.get(sp.span_id, []):
            add(branch, c)

    for root in (sp for sp in spans if not sp.parent_span_id or sp.parent_span_id not in ids):
        add(tree, root)
    return tree


@click.command()
@click.argument("trace_id")
def trace(trace_id: str) -> None:
    """Show a trace: its spans as a tree, its scores and feedback."""
    console = make_console()
    with exit_on_rpc_error(console):
        t = Client(load_settings()).get_trace(trace_id)
    s = t.summary
    console.print(f"[bold]trace {t.trace_id}[/]  model={s.model}  latency={s.latency_ms:.0f} ms  "
                  f"tokens={s.usage.prompt_tokens}→{s.usage.completion_tokens}  prompt={s.prompt_template} v{s.prompt_version}")
    if s.prompt:
        console.print(f"[cyan]Q:[/] {s.prompt}")
        console.print(f"[cyan]A:[/] {s.answer}")
    console.print(span_tree(t.spans))
    for sc in t.scores:
        console.print(f"score {sc.name}={sc.value:.3f} ({sc.evaluator} {sc.version}) {sc.explanation[:100]}")
    for fb in t.feedback:
        console.print(f"feedback {fb.name}={fb.score} by {fb.user_id or '-'}: {fb.comment}")


@click.command()
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--session", default="")
@click.option("--user", default="")
@click.option("--model", default="")
@click.option("--score", "score_name", default="", help="Only traces with this score (e.g. faithfulness) ...")
@click.option("--min", "min_score", type=float, default=None, help="... at least this value ...")
@click.option("--max", "max_score", type=float, default=None, help="... and at most this value.")
@click.option("--route", default="", help="Only requests of this route.")
@click.option("--deployment", default="", metavar="D[@V]", help="Only requests this deployment (version) answered.")
@click.option("--arm", type=click.Choice(["primary", "canary", "shadow"]), default=None, help="Only this arm.")
def traces(limit, session, user, model, score_name, min_score, max_score, route, deployment, arm) -> None:
    """List recent traces, optionally only those with a score in a range, or served a given way."""
    from rich.table import Table

    from llmops.v1 import tracing_pb2

    console = make_console()
    name, _, version = deployment.partition("@")
    if version and not version.isdigit():
        raise click.BadParameter(f"{deployment!r}: the version after @ is a number", param_hint="--deployment")
    req = tracing_pb2.ListTracesRequest(page_size=limit, session_id=session, user_id=user, model=model,
                                        score_name=score_name, min_score=min_score, max_score=max_score,
                                        route=route, deployment=name, deployment_version=int(version or 0),
                                        arm=arm or "")
    with exit_on_rpc_error(console):
        resp = Client(load_settings()).tracing.ListTraces(req, timeout=10)
    table = Table()
    for col in ("trace id", "start", "model", "served by", "latency ms", "tokens", "spans", "scores", "prompt"):
        table.add_column(col)
    for t in resp.traces:
        shown = score_values(t.scores)
        served = f"{t.deployment}@{t.deployment_version} {t.arm}" if t.deployment else "-"
        table.add_row(t.trace_id, t.start_time.ToDatetime().strftime("%H:%M:%S"), t.model, served, f"{t.latency_ms:.0f}",
                      f"{t.usage.prompt_tokens}→{t.usage.completion_tokens}", str(t.span_count),
                      " ".join(f"{k[:12]}={v:.2f}" for k, v in sorted(shown.items())), t.prompt[:40])
    console.print(table)


@click.command()
@click.argument("trace_id")
@click.argument("score", type=float)
@click.option("--comment", default="")
@click.option("--user", default="")
def feedback(trace_id, score, comment, user) -> None:
    """Record a user's score (and comment) on a trace."""
    from llmops.v1 import tracing_pb2

    with exit_on_rpc_error(make_console()):
        r = Client(load_settings()).tracing.SubmitFeedback(tracing_pb2.SubmitFeedbackRequest(
            trace_id=trace_id, score=score, comment=comment, user_id=user), timeout=10)
    click.echo(f"feedback {r.feedback.id} recorded")


COMMANDS = (trace, traces, feedback)
