"""``llmops ingest``: index files, directories or the demo corpus, over gRPC (waits until they
are searchable) or as ``DocumentEvent``s on the documents topic (indexed asynchronously)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from llmops.cli.client import Client
from llmops.cli.console import exit_on_rpc_error, load_settings, make_console
from llmops.cli.corpus import corpus_documents
from llmops.common.settings import Settings

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".html", ".htm", ".json", ".csv", ".yaml", ".yml", ".toml"}


def read_documents(paths: tuple[str, ...]) -> list:
    """One ``Document`` per non-empty text file under ``paths`` (its path is its id)."""
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


def ingest_documents(client: Client, docs, collection: str, console, batch: int = 8) -> tuple[int, int]:
    """Upsert ``docs`` in batches with a progress bar: (documents, chunks) indexed."""
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


async def publish_documents(s: Settings, docs, collection: str) -> None:
    """Each document as a ``DocumentEvent`` on the documents topic, acknowledged by the broker."""
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


@click.command()
@click.argument("paths", nargs=-1)
@click.option("--collection", default="", help="Target collection (default: LLMOPS_DEFAULT_COLLECTION).")
@click.option("--pydoc", is_flag=True, help="Ingest the demo corpus (pydoc_data.topics).")
@click.option("--via", type=click.Choice(["grpc", "kafka"]), default="grpc", show_default=True,
              help="Upsert over gRPC (waits), or publish DocumentEvents on the documents topic.")
def ingest(paths, collection, pydoc, via) -> None:
    """Index files, directories or the demo corpus; re-ingesting a document replaces it."""
    console = make_console()
    docs = read_documents(paths) + (corpus_documents() if pydoc else [])
    if not docs:
        raise click.UsageError("nothing to ingest: give files, a directory, or --pydoc")
    s = load_settings()
    t0 = time.monotonic()
    if via == "kafka":
        asyncio.run(publish_documents(s, docs, collection))
        console.print(f"published {len(docs)} DocumentEvents to {s.topic('documents')} "
                      f"in {time.monotonic() - t0:.1f}s (indexed asynchronously)")
        return
    with exit_on_rpc_error(console):
        n_docs, n_chunks = ingest_documents(Client(s), docs, collection, console)
    console.print(f"indexed {n_docs} documents as {n_chunks} chunks in {time.monotonic() - t0:.1f}s")


COMMANDS = (ingest,)
