"""``llmops demo`` (``make run``): the platform up on the embedded defaults, the demo corpus
(:mod:`llmops.cli.corpus`) ingested, RAG questions whose answers are in it answered, their
online judge scores and first trace shown, then a drift scenario that ends in a retrain event;
it keeps running until Ctrl-C."""
from __future__ import annotations

import asyncio
import json
import sys
import time

import click

from llmops.cli.client import Client
from llmops.cli.console import load_settings, make_console
from llmops.cli.corpus import QUESTIONS, corpus_documents
from llmops.cli.ingest import ingest_documents
from llmops.cli.running import run_stack
from llmops.cli.traces import score_values


@click.command()
@click.option("--exit-after", "exit_after", is_flag=True, help="Stop the platform after the demo.")
@click.option("--max-new-tokens", type=int, default=96, show_default=True)
@click.option("--drift-window", type=click.IntRange(min=10), default=20, show_default=True,
              help="Completions per drift window in the demo (LLMOPS_DRIFT_WINDOW_SIZE, with a 5 s join wait).")
def demo(exit_after: bool, max_new_tokens: int, drift_window: int) -> None:
    """Bring the platform up, ingest the demo corpus, answer RAG questions, show drift, keep running."""
    console = make_console()
    # small windows and a short join wait, so that the drift scenario shows within a minute or two
    settings = load_settings().model_copy(update={"drift_window_size": drift_window, "drift_join_wait_s": 5.0})

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

    sys.exit(asyncio.run(run_stack(console, settings, after_start)))


def _show_drift(console, client, settings, stop, max_new_tokens: int = 16, timeout_s: float = 240) -> bool:
    """The end of the demo: complete the drift monitor's reference window with more English
    questions about Python, then shift to Korean questions about cooking, and show the drift
    summary and the retrain event the shift fires."""
    from llmops.cli.drift import print_retrain, print_status
    from llmops.cli.workloads import korean_prompts, python_prompts, stream
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
                shown[tid] = score_values(scores)
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


COMMANDS = (demo,)
