"""``llmops generate``: one traced answer, streamed token by token or whole."""
from __future__ import annotations

import click

from llmops.cli.client import Client, generate_request
from llmops.cli.console import exit_on_rpc_error, load_settings, make_console


@click.command()
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
    console = make_console()
    client = Client(load_settings())
    req = generate_request(prompt, rag=rag, model=model, max_new_tokens=max_new_tokens, temperature=temperature,
                           collection=collection, top_k=top_k)
    with exit_on_rpc_error(console):
        if stream:
            res = None
            for msg in client.inference.GenerateStream(req, timeout=600):
                if msg.final:
                    res = msg.summary
                else:
                    console.print(msg.token, end="", soft_wrap=True)
            console.print()
        else:
            res = client.inference.Generate(req, timeout=600)
            console.print(res.text)
    console.print(f"[dim]trace {res.trace_id} · {res.model} · {res.latency_ms:.0f} ms · "
                  f"{res.usage.prompt_tokens} → {res.usage.completion_tokens} tokens · {res.finish_reason} · "
                  f"prompt {res.prompt_template} v{res.prompt_version}[/]")
    for n, c in enumerate(res.contexts, 1):
        console.print(f"[dim]  [{n}] {c.document_id} score={c.score:.3f}[/]")


COMMANDS = (generate,)
