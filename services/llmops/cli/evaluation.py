"""``llmops eval``: offline evaluation. Run a JSONL dataset through the real inference path and
the evaluators as a stored run (:mod:`llmops.cli.experiment`), list and show runs, compare two."""
from __future__ import annotations

import json
import sys

import click

from llmops.cli.client import Client
from llmops.cli.console import exit_on_rpc_error, load_settings, make_console
from llmops.cli.experiment import DatasetError, compare_runs, run_experiment


class _EvalGroup(click.Group):
    """``llmops eval DATASET.jsonl ...`` runs an experiment; ``llmops eval compare|list|show`` inspect."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)


@click.group("eval", cls=_EvalGroup)
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
    console = make_console()

    def progress(i, n, item):
        status = f"[red]{item.error}[/]" if item.error else " ".join(
            f"{s.name}={s.value:.2f}" for s in item.scores if s.status != 2)
        console.print(f"[{i}/{n}] {item.item_id}: {status}")

    try:
        with exit_on_rpc_error(console):
            run = run_experiment(Client(load_settings()), dataset, name=name, model=model,
                                 prompt_template=prompt_template, prompt_version=prompt_version, retrieval=rag,
                                 collection=collection, evaluators=evaluators, max_new_tokens=max_new_tokens,
                                 on_item=progress)
    except DatasetError as exc:
        console.print(f"[red]{exc}[/]")
        sys.exit(2)
    print_run(console, run)


def print_run(console, run) -> None:
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

    from llmops.v1 import tracing_pb2

    console = make_console()
    with exit_on_rpc_error(console):
        runs = Client(load_settings()).tracing.ListEvalRuns(tracing_pb2.ListEvalRunsRequest(page_size=limit),
                                                           timeout=10).runs
    table = Table("name", "created", "dataset", "sha256", "model", "prompt", "items", "errors")
    for r in runs:
        table.add_row(r.name, r.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M"), r.dataset, r.dataset_hash[:12],
                      r.model, f"{r.prompt_template} v{r.prompt_version}", str(r.item_count), str(r.error_count))
    console.print(table)


@eval_group.command("show")
@click.argument("name")
def eval_show(name) -> None:
    """Show one run: aggregates and per-item scores."""
    from rich.table import Table

    from llmops.v1 import tracing_pb2

    console = make_console()
    with exit_on_rpc_error(console):
        run = Client(load_settings()).tracing.GetEvalRun(tracing_pb2.GetEvalRunRequest(name=name), timeout=10)
    print_run(console, run)
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
    from rich.table import Table

    from llmops.v1 import judging_pb2, tracing_pb2

    console = make_console()
    client = Client(load_settings())
    with exit_on_rpc_error(console):
        a = client.tracing.GetEvalRun(tracing_pb2.GetEvalRunRequest(name=run_a), timeout=30)
        b = client.tracing.GetEvalRun(tracing_pb2.GetEvalRunRequest(name=run_b), timeout=30)

        def judge_pair(ia, ib):
            return client.judging.Compare(judging_pb2.CompareRequest(
                question=ia.question, answer_a=ia.answer or " ", answer_b=ib.answer or " ",
                reference=ia.reference), timeout=300)

        cmp = compare_runs(a, b, judge_pair if pairwise else None)
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


COMMANDS = (eval_group,)
