"""The ``llmops`` command."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import click

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SERVICE_MODULES = {
    "inference": "llmops.inference.main",
    "retrieval": "llmops.retrieval.main",
    "tracing": "llmops.tracing.main",
    "judging": "llmops.judging.main",
    "drift": "llmops.drift.main",
}
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".html", ".htm", ".json", ".csv", ".yaml", ".yml", ".toml"}


def _settings():
    from llmops.common.settings import Settings

    return Settings()


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _rpc_error(exc) -> str:
    return f"{exc.code().name}: {exc.details()}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """llmops: traced inference, RAG, online judging and drift monitors on Kafka."""


# -- running ------------------------------------------------------------------------------------
def _register_drift_commands() -> None:
    from llmops.drift.cli import drift_group, retrain_listener

    main.add_command(drift_group)
    main.add_command(retrain_listener)


_register_drift_commands()


@main.command()
@click.argument("service", type=click.Choice(sorted(SERVICE_MODULES)))
def serve(service: str) -> None:
    """Run one service in the foreground (``llmops up`` runs them all)."""
    import importlib

    from llmops.common.runtime import run_service

    build = importlib.import_module(SERVICE_MODULES[service]).build
    asyncio.run(run_service(service, _settings(), build))


@main.command()
def broker() -> None:
    """Run the embedded Kafka broker (Tansu) in the foreground."""
    from llmops.common.broker import EmbeddedBroker

    s = _settings()

    async def run() -> None:
        b = EmbeddedBroker(s.kafka_embedded_port)
        await b.start()
        click.echo(f"embedded Kafka broker on {b.bootstrap} (Ctrl-C stops it)")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        b.stop()

    asyncio.run(run())


async def _up(console, after_start=None) -> int:
    from llmops.supervisor import Stack, StackError

    s = _settings()
    stack = Stack(s, on_progress=lambda m: console.print(f"[dim]•[/] {m}"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        t0 = time.monotonic()
        await stack.start()
        console.print(f"[green]platform up[/] in {time.monotonic() - t0:.1f}s")
        _print_status(console, s, await _status_rows(s))
        keep_running = True
        if after_start is not None:
            keep_running = await after_start(stack, stop)
        if keep_running and not stop.is_set():
            console.print("running; Ctrl-C stops every service")
            report = await stack.watch(stop)
            if report:
                console.print(f"[red]{report}[/]")
                code = 1
    except StackError as exc:
        console.print(f"[red]{exc}[/]")
        code = 1
    finally:
        console.print("stopping…")
        await stack.stop()
        console.print("stopped")
    return code


@main.command()
def up() -> None:
    """Start the broker and every service, each in its own process; Ctrl-C stops them all."""
    sys.exit(asyncio.run(_up(_console())))


# -- status ------------------------------------------------------------------------------------
async def _status_rows(s) -> list[tuple[str, str, str]]:
    from llmops.common.broker import kafka_answers
    from llmops.supervisor import health_status

    rows = [("kafka", s.bootstrap_servers, "SERVING" if await kafka_answers(s.bootstrap_servers) else "UNREACHABLE")]
    for name in ("inference", "retrieval", "tracing", "judging", "drift"):
        status = await health_status(s.grpc_target(name), 2.0)
        rows.append((name, s.grpc_target(name), status))
    return rows


def _print_status(console, s, rows) -> bool:
    """Print the table; True when everything is SERVING."""
    from rich.table import Table

    table = Table(title="llmops status")
    for col in ("component", "address", "health", "metrics"):
        table.add_column(col)
    colors = {"SERVING": "green", "NOT_SERVING": "yellow", "UNREACHABLE": "red"}
    for name, addr, status in rows:
        metrics = f"http://{s.host}:{s.metrics_port(name)}/metrics" if name != "kafka" else ""
        table.add_row(name, addr, f"[{colors.get(status, 'dim')}]{status}[/]", metrics)
    console.print(table)
    return all(st == "SERVING" for _, _, st in rows)


@main.command()
def status() -> None:
    """Health of the broker and of every service."""
    s = _settings()
    sys.exit(0 if _print_status(_console(), s, asyncio.run(_status_rows(s))) else 1)


@main.command()
@click.argument("service", type=click.Choice(sorted(SERVICE_MODULES)))
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds to wait for an answer.")
def health(service: str, timeout: float) -> None:
    """Exit 0 when SERVICE answers SERVING to the gRPC health check (container healthchecks use it)."""
    from llmops.supervisor import health_status

    s = _settings()
    state = asyncio.run(health_status(s.grpc_target(service), timeout))
    click.echo(f"{service} {s.grpc_target(service)} {state}")
    sys.exit(0 if state == "SERVING" else 1)


# -- using it ----------------------------------------------------------------------------------
@main.command()
@click.argument("prompt")
@click.option("--rag", is_flag=True, help="Retrieve contexts and answer from them.")
@click.option("--model", default="", help="Model name (default: the server's default).")
@click.option("--max-new-tokens", type=int, default=None)
@click.option("--temperature", type=float, default=None)
@click.option("--collection", default="", help="Collection to retrieve from.")
@click.option("--top-k", type=int, default=3, show_default=True)
@click.option("--stream/--no-stream", default=True, show_default=True, help="Print tokens as they come.")
def generate(prompt, rag, model, max_new_tokens, temperature, collection, top_k, stream) -> None:
    """Generate an answer (traced), optionally with retrieval."""
    import grpc

    from llmops.client import Client
    from llmops.v1 import inference_pb2

    console = _console()
    client = Client(_settings())
    req = inference_pb2.GenerateRequest(prompt=prompt, model=model)
    if max_new_tokens is not None:
        req.parameters.max_new_tokens = max_new_tokens
    if temperature is not None:
        req.parameters.temperature = temperature
    if rag:
        req.retrieval.enabled = True
        req.retrieval.top_k = top_k
        req.retrieval.collection = collection
    try:
        if stream:
            summary = None
            for msg in client.inference.GenerateStream(req, timeout=600):
                if msg.final:
                    summary = msg.summary
                else:
                    console.print(msg.token, end="", soft_wrap=True)
            console.print()
            res = summary
        else:
            res = client.inference.Generate(req, timeout=600)
            console.print(res.text)
    except grpc.RpcError as exc:
        console.print(f"[red]{_rpc_error(exc)}[/]")
        sys.exit(1)
    console.print(f"[dim]trace {res.trace_id} · {res.model} · {res.latency_ms:.0f} ms · "
                  f"{res.usage.prompt_tokens} → {res.usage.completion_tokens} tokens · {res.finish_reason} · "
                  f"prompt {res.prompt_template} v{res.prompt_version}[/]")
    for n, c in enumerate(res.contexts, 1):
        console.print(f"[dim]  [{n}] {c.document_id} score={c.score:.3f}[/]")


@main.command()
@click.argument("trace_id")
def trace(trace_id: str) -> None:
    """Show a trace: its spans as a tree, its scores and feedback."""
    import grpc
    from rich.tree import Tree

    from llmops.client import Client

    console = _console()
    try:
        t = Client(_settings()).get_trace(trace_id)
    except grpc.RpcError as exc:
        console.print(f"[red]{_rpc_error(exc)}[/]")
        sys.exit(1)
    s = t.summary
    console.print(f"[bold]trace {t.trace_id}[/]  model={s.model}  latency={s.latency_ms:.0f} ms  "
                  f"tokens={s.usage.prompt_tokens}→{s.usage.completion_tokens}  prompt={s.prompt_template} v{s.prompt_version}")
    if s.prompt:
        console.print(f"[cyan]Q:[/] {s.prompt}")
        console.print(f"[cyan]A:[/] {s.answer}")
    children: dict[str, list] = {}
    for sp in t.spans:
        children.setdefault(sp.parent_span_id, []).append(sp)
    ids = {sp.span_id for sp in t.spans}
    roots = [sp for sp in t.spans if not sp.parent_span_id or sp.parent_span_id not in ids]
    tree = Tree("spans")

    def add(node, sp):
        ms = (sp.end_time.ToNanoseconds() - sp.start_time.ToNanoseconds()) / 1e6
        ok = {0: "unset", 1: "[green]ok[/]", 2: "[red]error[/]"}[sp.status]
        attrs = " ".join(f"{k}={v[:60]}" for k, v in sorted(sp.attributes.items()))
        branch = node.add(f"{sp.name} [dim]{sp.service}[/] {ms:.1f} ms {ok} [dim]{attrs}[/]")
        for c in children.get(sp.span_id, []):
            add(branch, c)

    for r in roots:
        add(tree, r)
    console.print(tree)
    for sc in t.scores:
        console.print(f"score {sc.name}={sc.value:.3f} ({sc.evaluator} {sc.version}) {sc.explanation[:100]}")
    for fb in t.feedback:
        console.print(f"feedback {fb.name}={fb.score} by {fb.user_id or '-'}: {fb.comment}")


@main.command()
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--session", default="")
@click.option("--user", default="")
@click.option("--model", default="")
@click.option("--score", "score_name", default="", help="Only traces with this score (e.g. faithfulness) ...")
@click.option("--min", "min_score", type=float, default=None, help="... at least this value ...")
@click.option("--max", "max_score", type=float, default=None, help="... and at most this value.")
def traces(limit, session, user, model, score_name, min_score, max_score) -> None:
    """List recent traces, optionally only those with a score in a range."""
    import grpc
    from rich.table import Table

    from llmops.client import Client
    from llmops.v1 import tracing_pb2

    req = tracing_pb2.ListTracesRequest(page_size=limit, session_id=session, user_id=user, model=model,
                                        score_name=score_name)
    if min_score is not None:
        req.min_score = min_score
    if max_score is not None:
        req.max_score = max_score
    try:
        resp = Client(_settings()).tracing.ListTraces(req, timeout=10)
    except grpc.RpcError as exc:
        _console().print(f"[red]{_rpc_error(exc)}[/]")
        sys.exit(1)
    table = Table()
    for col in ("trace id", "start", "model", "latency ms", "tokens", "spans", "scores", "prompt"):
        table.add_column(col)
    for t in resp.traces:
        shown = _score_values(t.scores)
        table.add_row(t.trace_id, t.start_time.ToDatetime().strftime("%H:%M:%S"), t.model, f"{t.latency_ms:.0f}",
                      f"{t.usage.prompt_tokens}→{t.usage.completion_tokens}", str(t.span_count),
                      " ".join(f"{k[:12]}={v:.2f}" for k, v in sorted(shown.items())), t.prompt[:40])
    _console().print(table)


@main.command()
@click.argument("trace_id")
@click.argument("score", type=float)
@click.option("--comment", default="")
@click.option("--user", default="")
def feedback(trace_id, score, comment, user) -> None:
    """Record a user's score (and comment) on a trace."""
    import grpc

    from llmops.client import Client
    from llmops.v1 import tracing_pb2

    try:
        r = Client(_settings()).tracing.SubmitFeedback(tracing_pb2.SubmitFeedbackRequest(
            trace_id=trace_id, score=score, comment=comment, user_id=user), timeout=10)
    except grpc.RpcError as exc:
        _console().print(f"[red]{_rpc_error(exc)}[/]")
        sys.exit(1)
    click.echo(f"feedback {r.feedback.id} recorded")


def _read_documents(paths: tuple[str, ...]):
    from llmops.v1 import retrieval_pb2

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise click.BadParameter(f"{p} is neither a file nor a directory")
    docs = []
    for f in files:
        text = f.read_text(errors="replace")
        if text.strip():
            docs.append(retrieval_pb2.Document(id=str(f), text=text, metadata={"source": str(f), "name": f.name}))
    return docs


def ingest_documents(client, docs, collection: str, console, batch: int = 8) -> tuple[int, int]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    total_docs = total_chunks = 0
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("embedding and indexing", total=len(docs))
        for i in range(0, len(docs), batch):
            part = docs[i:i + batch]
            r = client.upsert(part, collection)
            total_docs += r.documents
            total_chunks += r.chunks
            progress.advance(task, len(part))
    return total_docs, total_chunks


@main.command()
@click.argument("paths", nargs=-1)
@click.option("--collection", default="", help="Target collection (default: LLMOPS_DEFAULT_COLLECTION).")
@click.option("--pydoc", is_flag=True, help="Ingest the demo corpus (pydoc_data.topics).")
@click.option("--via", type=click.Choice(["grpc", "kafka"]), default="grpc", show_default=True,
              help="Upsert over gRPC (waits), or publish DocumentEvents on the documents topic.")
def ingest(paths, collection, pydoc, via) -> None:
    """Index files, directories or the demo corpus; re-ingesting a document replaces it."""
    import grpc

    from llmops.client import Client
    from llmops.demo import corpus_documents

    console = _console()
    docs = _read_documents(paths) + (corpus_documents() if pydoc else [])
    if not docs:
        raise click.UsageError("nothing to ingest: give files, a directory, or --pydoc")
    s = _settings()
    t0 = time.monotonic()
    if via == "kafka":
        asyncio.run(_publish_documents(s, docs, collection))
        console.print(f"published {len(docs)} DocumentEvents to {s.topic('documents')} "
                      f"in {time.monotonic() - t0:.1f}s (indexed asynchronously)")
        return
    try:
        n_docs, n_chunks = ingest_documents(Client(s), docs, collection, console)
    except grpc.RpcError as exc:
        console.print(f"[red]{_rpc_error(exc)}[/]")
        sys.exit(1)
    console.print(f"indexed {n_docs} documents as {n_chunks} chunks in {time.monotonic() - t0:.1f}s")


async def _publish_documents(s, docs, collection: str) -> None:
    from llmops.common.bus import EventBus
    from llmops.v1 import events_pb2

    bus = EventBus(s)
    await bus.start()
    try:
        for d in docs:
            await bus.send(s.topic("documents"), d.id, events_pb2.DocumentEvent(
                id=d.id, text=d.text, collection=collection, metadata=dict(d.metadata)))
    finally:
        await bus.stop()


# -- the demo (make run) -------------------------------------------------------------------------
@main.command()
@click.option("--exit-after", "exit_after", is_flag=True, help="Stop the platform after the demo.")
@click.option("--max-new-tokens", type=int, default=96, show_default=True)
@click.option("--drift-window", type=click.IntRange(min=10), default=20, show_default=True,
              help="Completions per drift window in the demo (it sets LLMOPS_DRIFT_WINDOW_SIZE, and a 5 s join wait).")
def demo(exit_after: bool, max_new_tokens: int, drift_window: int) -> None:
    """Bring the platform up, ingest the demo corpus, answer RAG questions, show drift, keep running."""
    from llmops.client import Client
    from llmops.demo import QUESTIONS, corpus_documents

    console = _console()

    async def after_start(stack, stop) -> bool:
        def run_demo() -> bool:
            from rich.table import Table

            client = Client(stack.settings)
            docs = corpus_documents()
            console.print(f"ingesting the demo corpus: {len(docs)} Python reference topics (pydoc_data.topics)")
            t0 = time.monotonic()
            n_docs, n_chunks = ingest_documents(client, docs, "", console)
            console.print(f"indexed {n_docs} documents as {n_chunks} chunks in {time.monotonic() - t0:.1f}s")
            table = Table(title="RAG answers (SmolLM2-135M-Instruct, llama.cpp)", show_lines=True)
            for col in ("question", "answer", "retrieved topics", "trace id", "latency ms", "tokens in→out"):
                table.add_column(col, overflow="fold")
            first = None
            results = []
            for q in QUESTIONS:
                if stop.is_set():
                    return False
                r = client.generate(q.question, rag=True, max_new_tokens=max_new_tokens)
                first = first or r.trace_id
                topics = list(dict.fromkeys(c.metadata.get("topic", c.document_id) for c in r.contexts))
                table.add_row(q.question, r.text.strip()[:400], ", ".join(topics), r.trace_id, f"{r.latency_ms:.0f}",
                              f"{r.usage.prompt_tokens}→{r.usage.completion_tokens}")
                results.append({"question": q.question, "expected_topics": list(q.topics), "retrieved_topics": topics,
                                "hit": bool(set(q.topics) & set(topics)), "trace_id": r.trace_id, "answer": r.text,
                                "latency_ms": r.latency_ms, "prompt_tokens": r.usage.prompt_tokens,
                                "completion_tokens": r.usage.completion_tokens, "finish_reason": r.finish_reason})
            console.print(table)
            hits = sum(r["hit"] for r in results)
            console.print(f"retrieval found the right topic for {hits}/{len(results)} questions")
            _show_scores(console, client, results)
            out = stack.settings.data_dir / "demo-results.json"
            out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
            console.print(f"results written to {out}")
            _show_first_trace(console, client, first)
            return _show_drift(console, client, stack.settings, stop)

        ok = await asyncio.to_thread(run_demo)
        return ok and not exit_after

    # small windows and a short join wait, so the drift scenario shows within a minute or two
    os.environ["LLMOPS_DRIFT_WINDOW_SIZE"] = str(drift_window)
    os.environ["LLMOPS_DRIFT_JOIN_WAIT_S"] = "5"
    sys.exit(asyncio.run(_up(console, after_start)))


def _show_drift(console, client, settings, stop, max_new_tokens: int = 16, timeout_s: float = 240) -> bool:
    """The end of the demo: complete the drift monitor's reference window with more English
    questions about Python, then shift to Korean questions about cooking, and show the drift
    summary and the retrain event the shift fires."""
    from llmops.demo import QUESTIONS
    from llmops.drift.cli import print_retrain, print_status
    from llmops.drift.workloads import korean_prompts, python_prompts, stream
    from llmops.v1 import drift_pb2

    window = settings.drift_window_size
    phases = (("English questions about Python", stream(python_prompts(), max(0, window - len(QUESTIONS)), seed=7)),
              ("Korean questions about cooking (the shift)", stream(korean_prompts(), 2 * window, seed=8)))
    console.print(f"[bold]drift[/]: the first {window} completions are the reference window of monitor 'default'; "
                  f"then the traffic shifts")
    for label, prompts in phases:
        t0 = time.monotonic()
        for p in prompts:
            if stop.is_set():
                return False
            client.generate(p, rag=True, max_new_tokens=max_new_tokens)
        console.print(f"  sent {len(prompts)} {label} in {time.monotonic() - t0:.0f}s")
    deadline = time.monotonic() + timeout_s
    events, monitors = [], []
    # until the retrain event is out and both shifted windows are judged (the join wait, then Evidently)
    while time.monotonic() < deadline and not stop.is_set():
        events = list(client.drift.ListRetrainEvents(drift_pb2.ListRetrainEventsRequest(), timeout=10).events)
        monitors = client.drift.GetStatus(drift_pb2.GetStatusRequest(), timeout=10).monitors
        if events and all(len(m.recent_windows) >= 2 for m in monitors):
            break
        time.sleep(1)
    print_status(console, monitors)
    summary = {"windows": [{"report_id": w.report_id, "drift": w.drift_detected, "share": w.drift_share,
                            "drifted": [f.feature for f in w.features if f.drifted], "report": w.report_path}
                           for m in monitors for w in m.recent_windows]}
    if events:
        print_retrain(console, events[0])
        summary["retrain_event"] = {"id": events[0].id, "monitor": events[0].monitor, "reason": events[0].reason,
                                    "evidence": [f.feature for f in events[0].evidence],
                                    "trace_ids": list(events[0].trace_ids)}
        console.print("`llmops retrain-listener --out DIR` turns such events into training-candidate datasets")
    else:
        console.print(f"[yellow]no retrain event within {timeout_s:.0f}s[/]")
    (settings.data_dir / "demo-drift.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return True


def _score_values(scores) -> dict[str, float]:
    """One value per score name (OK scores only); the cheap tier's when both tiers wrote one."""
    out: dict[str, float] = {}
    for sc in scores:
        if sc.status != 2 and (sc.name not in out or not sc.evaluator.endswith(".llm")):
            out[sc.name] = sc.value
    return out


CHEAP_SCORES = ("faithfulness", "answer_relevancy", "context_relevancy", "pii", "prompt_injection")


def _show_scores(console, client, results: list[dict], timeout_s: float = 30) -> None:
    """Wait for the online judge's cheap-tier scores of the demo's answers and show them."""
    import grpc
    from rich.table import Table

    deadline = time.monotonic() + timeout_s
    pending = {r["trace_id"]: r for r in results}
    shown: dict[str, dict[str, float]] = {}
    while pending and time.monotonic() < deadline:
        for tid, r in list(pending.items()):
            try:
                scores = client.get_trace(tid).scores
            except grpc.RpcError:
                continue
            if set(CHEAP_SCORES) <= {sc.name for sc in scores if not sc.evaluator.endswith(".llm")}:
                r["scores"] = {sc.evaluator: round(sc.value, 4) for sc in scores if sc.status != 2}
                shown[tid] = _score_values(scores)
                del pending[tid]
        time.sleep(0.3)
    table = Table(title="online judge scores (cheap tier: MiniLM; safety flags: 1 = found)")
    for col in ("question", *CHEAP_SCORES):
        table.add_column(col)
    for r in results:
        values = shown.get(r["trace_id"], {})
        table.add_row(r["question"][:50], *(f"{values[n]:.2f}" if n in values else "…" for n in CHEAP_SCORES))
    console.print(table)
    if pending:
        console.print(f"[yellow]{len(pending)} answers not scored yet; see `llmops traces`[/]")


def _show_first_trace(console, client, trace_id: str) -> None:
    import grpc

    deadline = time.monotonic() + 15
    while True:
        try:
            t = client.get_trace(trace_id)
            request_spans = [s for s in t.spans if s.service != "judging"]
            if len(request_spans) >= 4:
                break
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            console.print(f"[yellow]trace {trace_id} not stored yet; try `llmops trace {trace_id}`[/]")
            return
        time.sleep(0.2)
    names = ", ".join(f"{s.name} ({(s.end_time.ToNanoseconds() - s.start_time.ToNanoseconds()) / 1e6:.0f} ms)"
                      for s in request_spans)
    judged = len(t.spans) - len(request_spans)
    console.print(f"trace {trace_id} is stored with {len(request_spans)} spans: {names}"
                  + (f", plus {judged} judge spans" if judged else ""))
    console.print(f"see it with: [bold].venv/bin/llmops trace {trace_id}[/]")


# -- offline evaluation --------------------------------------------------------------------------
class _EvalGroup(click.Group):
    """``llmops eval DATASET.jsonl ...`` runs an experiment; ``llmops eval compare|list|show`` inspect."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)


@main.group("eval", cls=_EvalGroup)
def eval_group() -> None:
    """Offline evaluation: run a dataset through the platform, compare runs."""


@eval_group.command("run")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="Name of the run (unique).")
@click.option("--model", default="", help="Model to evaluate (default: the server's default).")
@click.option("--prompt-template", default="", help="Prompt template (default: rag with --rag, else chat).")
@click.option("--prompt-version", type=int, default=None, help="Template version (default: the production one).")
@click.option("--rag", is_flag=True, help="Retrieve contexts (the real RAG path).")
@click.option("--collection", default="")
@click.option("--evaluator", "evaluators", multiple=True, help="Evaluator to run (repeat); default: cheap, "
              "safety and, when the item has a reference, the reference metrics.")
@click.option("--max-new-tokens", type=int, default=None)
def eval_run(dataset, name, model, prompt_template, prompt_version, rag, collection, evaluators, max_new_tokens):
    """Run DATASET (JSONL: question, reference, id) through inference and the evaluators; store the run."""
    import grpc

    from llmops.client import Client
    from llmops.judging.experiment import DatasetError, run_experiment

    console = _console()

    def progress(i, n, item):
        status = f"[red]{item.error}[/]" if item.error else " ".join(
            f"{s.name}={s.value:.2f}" for s in item.scores if s.status != 2)
        console.print(f"[{i}/{n}] {item.item_id}: {status}")

    try:
        run = run_experiment(Client(_settings()), dataset, name=name, model=model, prompt_template=prompt_template,
                             prompt_version=prompt_version, retrieval=rag, collection=collection,
                             evaluators=evaluators, max_new_tokens=max_new_tokens, on_item=progress)
    except DatasetError as exc:
        console.print(f"[red]{exc}[/]")
        sys.exit(2)
    except grpc.RpcError as exc:
        console.print(f"[red]{_rpc_error(exc)}[/]")
        sys.exit(1)
    _print_run(console, run)


def _print_run(console, run) -> None:
    from rich.table import Table

    console.print(f"[bold]run {run.name}[/] ({run.run_id})  dataset={run.dataset} sha256={run.dataset_hash[:12]}  "
                  f"model={run.model}  prompt={run.prompt_template} v{run.prompt_version}  "
                  f"items={run.item_count} errors={run.error_count}")
    table = Table("evaluator", "mean")
    for k, v in sorted(run.aggregates.items()):
        table.add_row(k, f"{v:.3f}")
    console.print(table)


@eval_group.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
def eval_list(limit) -> None:
    """List evaluation runs, newest first."""
    from rich.table import Table

    from llmops.client import Client
    from llmops.v1 import tracing_pb2

    import grpc

    try:
        runs = Client(_settings()).tracing.ListEvalRuns(tracing_pb2.ListEvalRunsRequest(page_size=limit), timeout=10).runs
    except grpc.RpcError as exc:
        _console().print(f"[red]{_rpc_error(exc)}[/]")
        sys.exit(1)
    table = Table("name", "created", "dataset", "sha256", "model", "prompt", "items", "errors")
    for r in runs:
        table.add_row(r.name, r.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M"), r.dataset, r.dataset_hash[:12],
                      r.model, f"{r.prompt_template} v{r.prompt_version}", str(r.item_count), str(r.error_count))
    _console().print(table)


@eval_group.command("show")
@click.argument("name")
def eval_show(name) -> None:
    """Show one run: aggregates and per-item scores."""
    import grpc
    from rich.table import Table

    from llmops.client import Client
    from llmops.v1 import tracing_pb2

    console = _console()
    try:
        run = Client(_settings()).tracing.GetEvalRun(tracing_pb2.GetEvalRunRequest(name=name), timeout=10)
    except grpc.RpcError as exc:
        console.print(f"[red]{_rpc_error(exc)}[/]")
        sys.exit(1)
    _print_run(console, run)
    table = Table("item", "trace", "answer", "scores")
    for it in run.items:
        table.add_row(it.item_id, it.trace_id[:12], (it.error or it.answer)[:60],
                      " ".join(f"{s.evaluator}={s.value:.2f}" for s in it.scores if s.status != 2))
    console.print(table)


@eval_group.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--pairwise/--no-pairwise", default=True, show_default=True,
              help="Ask the pairwise judge (both orders) which answer is better, item by item.")
@click.option("--json", "as_json", type=click.Path(dir_okay=False), default=None, help="Also write the comparison here.")
def eval_compare(run_a, run_b, pairwise, as_json) -> None:
    """Compare two runs: aggregates side by side, item wins/losses, pairwise verdicts."""
    import json

    import grpc
    from rich.table import Table

    from llmops.client import Client
    from llmops.judging.experiment import compare_runs
    from llmops.v1 import judging_pb2, tracing_pb2

    console = _console()
    client = Client(_settings())
    try:
        a = client.tracing.GetEvalRun(tracing_pb2.GetEvalRunRequest(name=run_a), timeout=30)
        b = client.tracing.GetEvalRun(tracing_pb2.GetEvalRunRequest(name=run_b), timeout=30)

        def judge_pair(ia, ib):
            return client.judging.Compare(judging_pb2.CompareRequest(
                question=ia.question, answer_a=ia.answer or " ", answer_b=ib.answer or " ",
                reference=ia.reference), timeout=300)

        cmp = compare_runs(a, b, judge_pair if pairwise else None)
    except grpc.RpcError as exc:
        console.print(f"[red]{_rpc_error(exc)}[/]")
        sys.exit(1)
    if not cmp.same_dataset:
        console.print("[yellow]the runs used different datasets (sha256 differs); items are matched by id[/]")
    console.print(f"[bold]A = {a.name}[/] ({a.model}, {a.prompt_template} v{a.prompt_version})   "
                  f"[bold]B = {b.name}[/] ({b.model}, {b.prompt_template} v{b.prompt_version})   "
                  f"items in both: {cmp.common_items}")
    table = Table("evaluator", "A mean", "B mean", "B - A", "A wins", "B wins", "ties")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for m in cmp.metrics:
        table.add_row(m.evaluator, fmt(m.mean_a), fmt(m.mean_b), fmt(m.delta) if m.delta is None else f"{m.delta:+.3f}",
                      str(m.wins_a), str(m.wins_b), str(m.ties))
    console.print(table)
    if pairwise:
        v = cmp.verdicts()
        console.print(f"pairwise judge (both orders): A better {v['A']}, B better {v['B']}, tie {v['tie']} "
                      f"(of which {v['inconsistent']} flipped with the order)")
    if as_json:
        with open(as_json, "w") as f:
            json.dump(cmp.to_dict(), f, indent=2)


if __name__ == "__main__":
    main()
