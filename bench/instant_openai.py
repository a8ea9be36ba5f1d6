"""An instant OpenAI-compatible upstream for the routing benchmark: ``/v1/chat/completions`` and
``/v1/completions`` (JSON, or server-sent events with ``stream: true``) and ``/v1/models`` answer at
once with a fixed short answer and a ``usage`` block, so that a gateway in front of it is all that a
client measures. Every other path is OpenAI's JSON 404, as on a plain OpenAI server (no vLLM/TGI
``/tokenize``, no llama-cpp-python ``/extras``).

The answer names the upstream (``--name``): the client of a gateway with fallbacks sees which
upstream served it. ``GET /stats`` counts the requests per path (404s included), so the benchmark
checks how many upstream calls a gateway makes per request, and over how many connections (the
client ports it saw on the generation routes).

``--vllm-extras`` adds vLLM's own ``POST /tokenize`` (a prompt, or chat messages rendered with a
template) and ``POST /detokenize``, the routes a client uses for token counts and the model's chat
template; a token here is one character, so ``/detokenize`` gives back exactly what was rendered.

Run it in a process of its own: ``python -m bench.instant_openai --port N --name A --model M``.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from aiohttp import web

PROMPT_TOKENS, COMPLETION_TOKENS = 12, 3


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def build_app(name: str, model: str, vllm_extras: bool = False) -> web.Application:
    answer = f"ok from {name}"
    usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
             "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}
    created = int(time.time())
    hits: Counter[str] = Counter()
    peers: set = set()   # (host, port) of each client connection seen: a gateway without keep-alive shows up

    def chat_body(rid: int) -> dict:
        return {"id": f"chatcmpl-{name}-{rid}", "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "logprobs": None, "finish_reason": "stop"}], "usage": usage}

    def text_body(rid: int) -> dict:
        return {"id": f"cmpl-{name}-{rid}", "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": name,
                "choices": [{"index": 0, "text": answer, "logprobs": None, "finish_reason": "stop"}], "usage": usage}

    async def generate(request: web.Request, chat: bool) -> web.StreamResponse:
        hits[request.path] += 1
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        try:
            req = json.loads(await request.read())
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        rid = hits[request.path]
        if not req.get("stream"):
            return web.Response(body=_dumps(chat_body(rid) if chat else text_body(rid)), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        kind = "chat.completion.chunk" if chat else "text_completion"
        base = {"id": f"cmpl-{name}-{rid}", "object": kind, "created": created, "model": model}
        piece = {"index": 0, "delta": {"role": "assistant", "content": answer}} if chat else {"index": 0, "text": answer}
        await resp.write(b"data: " + _dumps({**base, "choices": [{**piece, "finish_reason": None}]}) + b"\n\n")
        empty = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
        await resp.write(b"data: " + _dumps({**base, "choices": [{**empty, "finish_reason": "stop"}]}) + b"\n\n")
        if (req.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + _dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        return await generate(request, chat=True)

    async def completions(request: web.Request) -> web.StreamResponse:
        return await generate(request, chat=False)

    models_body = _dumps({"object": "list", "data": [{"id": model, "object": "model", "created": created,
                                                        "owned_by": name}]})

    async def models(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(body=models_body, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=_dumps({"name": name, "requests": dict(hits), "connections": len(peers)}), content_type="application/json")

    async def unknown(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return _error(404, f"Unknown request URL: {request.method} {request.path}.", "invalid_request_error",
                      "unknown_url")

    async def tokenize(request: web.Request) -> web.Response:
        hits[request.path] += 1
        req = json.loads(await request.read())
        if "messages" in req:
            text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in req["messages"])
            text += "<|assistant|>" if req.get("add_generation_prompt") else ""
        else:
            text = str(req.get("prompt", ""))
        tokens = [ord(c) for c in text]
        return web.Response(body=_dumps({"count": len(tokens), "max_model_len": 4096, "tokens": tokens}),
                            content_type="application/json")

    async def detokenize(request: web.Request) -> web.Response:
        hits[request.path] += 1
        req = json.loads(await request.read())
        return web.Response(body=_dumps({"prompt": "".join(map(chr, req.get("tokens", [])))}),
                            content_type="application/json")

    app = web.Application()
    if vllm_extras:
        app.router.add_post("/tokenize", tokenize)
        app.router.add_post("/detokenize", detokenize)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    app.router.add_route("*", "/{tail:.*}", unknown)
    return app


def _error(status: int, message: str, type_: str, code: str | None = None) -> web.Response:
    return web.Response(status=status, body=_dumps({"error": {"message": message, "type": type_, "param": None,
                                                              "code": code}}), content_type="application/json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="upstream")
    ap.add_argument("--model", default="bench-model")
    ap.add_argument("--vllm-extras", action="store_true", help="also vLLM's /tokenize and /detokenize")
    args = ap.parse_args()
    web.run_app(build_app(args.name, args.model, args.vllm_extras), host="127.0.0.1", port=args.port, access_log=None,
                print=None, reuse_address=True)


if __name__ == "__main__":
    main()
