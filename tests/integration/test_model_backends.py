"""One contract suite for every model backend (the ``ModelBackend`` protocol, TGI semantics):

- ``llama_cpp``: the embedded SmolLM2 GGUF;
- ``tgi``: the wire-level fake of TGI's HTTP API (tests/fakes/tgi_server.py), or a real TGI when
  ``LLMOPS_TGI_URL`` is set;
- ``openai``: the real OpenAI-compatible server of llama-cpp-python (``python -m llama_cpp.server``)
  on the same GGUF, started once for this module.
"""
from __future__ import annotations

import os

import pytest

from llmops.common.errors import InvalidArgument, Unavailable
from llmops.common.settings import Settings
from llmops.backends import BackendSpec, open_backend
from llmops.backends.openai_compat import OpenAICompatBackend
from llmops.backends.protocol import ChatTurn, Generation, GenerationParams, ModelBackend, TokenOut
from llmops.backends.tgi import TgiBackend
from tests.fakes.tgi_server import FakeTgiServer
from tests.support import free_port, llama_openai_server

REAL_TGI = os.environ.get("LLMOPS_TGI_URL", "")
QUESTION = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server on the packaged GGUF; its base URL (…/v1)."""
    with llama_openai_server(tmp_path_factory.mktemp("llama-server")) as url:
        yield url


@pytest.fixture(scope="module")
def tgi_url():
    if REAL_TGI:
        yield REAL_TGI
        return
    with FakeTgiServer() as server:
        yield server.url


@pytest.fixture(scope="module", params=["llama_cpp", "tgi", "openai"])
def backend(request):
    kind = request.param
    if kind == "llama_cpp":
        yield request.getfixturevalue("llama")   # the session's embedded model (tests/conftest.py)
        return
    if kind == "tgi":
        b = open_backend(BackendSpec("tgi", "smollm2", url=request.getfixturevalue("tgi_url"), timeout_s=60))
    else:
        b = open_backend(BackendSpec("openai", "smollm2", url=request.getfixturevalue("llama_server"),
                                     timeout_s=60, remote_model="smollm2"))
    yield b
    b.close()


def chat(backend: ModelBackend, question: str = QUESTION) -> str:
    return backend.render_chat([ChatTurn("system", "You are a helpful assistant."), ChatTurn("user", question)])


# -- the contract ------------------------------------------------------------------------------------
async def test_generate_honours_max_new_tokens_and_reports_length(backend):
    prompt = chat(backend, "Write a long story about a dragon who learns to bake bread.")
    g = await backend.generate(prompt, GenerationParams(max_new_tokens=5))
    assert g.finish_reason == "length" and g.completion_tokens == 5
    assert g.text.strip()
    assert abs(g.prompt_tokens - backend.count_tokens(prompt)) <= 1   # llama.cpp adds a BOS
    assert g.tokens == []   # only with details / top_n_tokens


async def test_greedy_generation_is_deterministic(backend):
    prompt = chat(backend)
    a = await backend.generate(prompt, GenerationParams(max_new_tokens=8))
    b = await backend.generate(prompt, GenerationParams(max_new_tokens=8))
    assert a.text == b.text and a.text.strip()


async def test_a_stop_sequence_stops_and_stays_in_the_text(backend):
    prompt = chat(backend)
    full = await backend.generate(prompt, GenerationParams(max_new_tokens=16))
    words = [w for w in full.text.split() if len(w) >= 3 and full.text.find(w) > 0]
    assert words, f"no usable stop word in {full.text!r}"
    stop = words[len(words) // 2]
    g = await backend.generate(prompt, GenerationParams(max_new_tokens=16, stop=(stop,)))
    assert g.finish_reason == "stop_sequence"
    cut = full.text.find(stop)
    assert g.text.startswith(full.text[:cut] + stop)     # TGI keeps the stop sequence
    assert len(g.text) < len(full.text) and g.completion_tokens <= full.completion_tokens


async def test_streamed_tokens_make_up_the_final_generation(backend):
    prompt = chat(backend)
    params = GenerationParams(max_new_tokens=10, details=True)
    items = [item async for item in backend.generate_stream(prompt, params)]
    *tokens, final = items
    assert isinstance(final, Generation) and all(isinstance(t, TokenOut) for t in tokens)
    assert "".join(t.text for t in tokens) == final.text
    once = await backend.generate(prompt, params)
    assert (final.text, final.finish_reason, final.completion_tokens) == (once.text, once.finish_reason,
                                                                          once.completion_tokens)
    assert final.prompt_tokens == once.prompt_tokens > 10


async def test_stream_stops_at_a_stop_sequence(backend):
    prompt = chat(backend)
    full = await backend.generate(prompt, GenerationParams(max_new_tokens=12))
    stop = next(w for w in reversed(full.text.split()) if len(w) >= 3 and full.text.find(w) > 0)
    items = [item async for item in backend.generate_stream(prompt, GenerationParams(max_new_tokens=12, stop=(stop,)))]
    final = items[-1]
    assert final.finish_reason == "stop_sequence" and stop in final.text
    assert "".join(t.text for t in items[:-1]) == final.text


async def test_top_n_tokens_gives_the_likeliest_alternatives_first(backend):
    g = await backend.generate(chat(backend), GenerationParams(max_new_tokens=2, top_n_tokens=5))
    assert len(g.tokens) >= 1
    for tok in g.tokens:
        logprobs = [lp for _, lp in tok.top]
        assert 2 <= len(tok.top) <= 5
        assert all(lp <= 0.0 for lp in logprobs) and logprobs == sorted(logprobs, reverse=True)
        assert tok.top[0][0] == tok.text     # greedy: the chosen token is the likeliest
        assert tok.logprob == pytest.approx(tok.top[0][1], abs=1e-3)


async def test_a_rendered_chat_is_answered(backend):
    prompt = chat(backend)
    assert QUESTION in prompt and prompt != QUESTION
    g = await backend.generate(prompt, GenerationParams(max_new_tokens=16))
    assert g.text.strip() and QUESTION not in g.text
    assert g.finish_reason in ("length", "eos_token")


def test_limits_are_sane(backend):
    lim = backend.limits()
    assert 0 < lim.max_input_tokens < lim.max_total_tokens
    assert backend.count_tokens("") == 0 < backend.count_tokens("hello world") < backend.count_tokens("hello world " * 20)


async def test_an_overlong_prompt_is_an_invalid_argument(backend):
    prompt = "lorem ipsum " * 3000
    with pytest.raises(InvalidArgument):
        await backend.generate(prompt, GenerationParams(max_new_tokens=4))
    with pytest.raises(InvalidArgument):
        async for _ in backend.generate_stream(prompt, GenerationParams(max_new_tokens=4)):
            pass


# -- remote servers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["tgi", "openai"])
async def test_an_unreachable_server_is_unavailable(kind):
    b = open_backend(BackendSpec(kind, "smollm2", url=f"http://127.0.0.1:{free_port()}", timeout_s=5))
    try:
        with pytest.raises(Unavailable):
            b.limits()
        with pytest.raises(Unavailable):
            await b.generate("Hello", GenerationParams(max_new_tokens=2))
        with pytest.raises(Unavailable):
            async for _ in b.generate_stream("Hello", GenerationParams(max_new_tokens=2)):
                pass
    finally:
        b.close()


@pytest.mark.skipif(bool(REAL_TGI), reason="the fake's limits (max_top_n_tokens=5) are known; a real TGI's are not")
async def test_tgi_caps_top_n_tokens_at_the_servers_limit(tgi_url):
    b = TgiBackend(tgi_url, "smollm2")
    try:
        g = await b.generate("Hello", GenerationParams(max_new_tokens=1, top_n_tokens=20))   # the judge asks for 20
        assert len(g.tokens[0].top) == 5
        items = [i async for i in b.generate_stream("Hello", GenerationParams(max_new_tokens=1, top_n_tokens=20))]
        assert len(items[0].top) == 5
    finally:
        b.close()


def test_settings_pick_the_backend_and_its_url(tgi_url, tmp_path):
    from llmops.inference.main import load_backend
    from llmops.judging.main import load_judge

    b = load_backend(Settings(data_dir=tmp_path, model_backend="tgi", tgi_url=tgi_url))
    try:
        assert isinstance(b, TgiBackend) and b.name == "smollm2-135m-instruct" and b.limits().max_total_tokens > 0
    finally:
        b.close()
    with pytest.raises(ValueError, match="LLMOPS_OPENAI_BASE_URL"):
        load_backend(Settings(data_dir=tmp_path, model_backend="openai", openai_base_url=""))
    with pytest.raises(ValueError, match="LLMOPS_JUDGE_URL"):
        load_judge(Settings(data_dir=tmp_path, judge_backend="tgi", tgi_url="", judge_url=""))
    judge = load_judge(Settings(data_dir=tmp_path, judge_backend="tgi", tgi_url="http://unused:1", judge_url=tgi_url,
                                tgi_api_key="hf_secret"))
    assert judge is not None and isinstance(judge.backend, TgiBackend) and judge.yield_to is None
    judge.backend.close()


async def test_the_tgi_api_key_goes_with_every_call():
    """LLMOPS_TGI_API_KEY (a Hugging Face Inference Endpoint's token) is sent on /info, /tokenize
    and generation alike."""
    from llmops.inference.main import load_backend

    with FakeTgiServer() as server:
        b = load_backend(Settings(model_backend="tgi", tgi_url=server.url, tgi_api_key="hf_secret"))
        try:
            b.count_tokens("hello there")
            await b.generate("hello there", GenerationParams(max_new_tokens=3))
        finally:
            b.close()
        paths = {path for path, _ in server.tgi.authorizations}
        assert {"/info", "/tokenize"} <= paths and paths & {"/", "/generate"}
        assert {auth for _, auth in server.tgi.authorizations} == {"Bearer hf_secret"}


async def test_the_judge_scores_through_the_openai_backend(llama_server):
    from llmops.judging.evaluator import Sample
    from llmops.judging.judge_model import JudgeModel
    from llmops.judging.llm_tier import LlmAnswerRelevancy

    backend = OpenAICompatBackend(llama_server, "judge:smollm2", model="smollm2", timeout_s=60)
    try:
        judge = JudgeModel(backend)
        [j] = await LlmAnswerRelevancy(judge).evaluate(
            [Sample(question="What is the capital of France?", answer="The capital of France is Paris.")])
        assert not j.error, j.error
        assert 0.0 <= j.value <= 1.0 and j.calls and j.calls[0].prompt_tokens > 20
    finally:
        backend.close()
