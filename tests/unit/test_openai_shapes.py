"""The OpenAI request/response shapes mapped onto the engine's input and result (no I/O)."""
import pytest

from llmops.backends.protocol import ChatTurn, TokenOut
from llmops.inference import openai_shapes as shapes
from llmops.inference.engine import GenerateResult
from llmops.inference.prompts import PromptTemplate

DEFAULT_MAX = 128


def chat(**body):
    return shapes.parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}, DEFAULT_MAX)


def refused(fn, *args, **kwargs) -> shapes.OpenAIRequestError:
    with pytest.raises(shapes.OpenAIRequestError) as info:
        fn(*args, **kwargs)
    return info.value


def test_chat_fields_map_onto_the_engine_input():
    call = chat(messages=[{"role": "developer", "content": "be brief"},
                          {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
                max_completion_tokens=7, temperature=0.5, top_p=0.9, stop="\n", seed=3, user="alice",
                metadata={"app": "x"}, top_k=5, repetition_penalty=1.2, stream=True,
                stream_options={"include_usage": True}, logprobs=True, top_logprobs=2,
                llmops={"session_id": "s1", "metadata": {"team": "t"}, "prompt_template": "terse", "prompt_version": 2,
                        "retrieval": {"collection": "kb", "top_k": 2, "alpha": 0.3, "filters": {"lang": "en"}}})
    inp, p = call.input, call.input.params
    assert inp.messages == [ChatTurn("system", "be brief"), ChatTurn("user", "a\nb")] and inp.model == "m"
    assert (p.max_new_tokens, p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.stop, p.seed) == (
        7, 0.5, 0.9, 5, 1.2, ("\n",), 3)
    assert p.details and p.top_n_tokens == 2 and call.logprobs and call.top_logprobs == 2
    assert call.stream and call.include_usage and call.stop == ("\n",)
    assert (inp.user_id, inp.session_id, inp.metadata) == ("alice", "s1", {"app": "x", "team": "t"})
    assert (inp.template_name, inp.template_version) == ("terse", 2)
    r = inp.retrieval
    assert (r.collection, r.top_k, r.alpha, r.filters) == ("kb", 2, 0.3, {"lang": "en"})


def test_defaults_are_the_platforms_greedy_generation():
    p = chat().input.params
    assert p.max_new_tokens == DEFAULT_MAX and not p.sampling and p.stop == ()
    assert chat(max_tokens=9).input.params.max_new_tokens == 9
    # temperature 0 is OpenAI's greedy: no other knob switches sampling back on
    assert not chat(temperature=0, top_p=0.5).input.params.sampling
    assert chat(top_p=1).input.params.top_p is None and chat(top_k=-1).input.params.top_k is None
    assert chat(llmops={"retrieval": True}).input.retrieval.top_k == shapes.DEFAULT_RAG_TOP_K
    assert chat(llmops={"retrieval": {"enabled": False, "top_k": 2}}).input.retrieval is None


@pytest.mark.parametrize("body, param, words", [
    ({"n": 2}, "n", "`n` must be 1"),
    ({"presence_penalty": 0.5}, "presence_penalty", "repetition_penalty"),
    ({"frequency_penalty": 1}, "frequency_penalty", "not supported"),
    ({"temperature": 3}, "temperature", "between 0 and 2"),
    ({"temperature": "hot"}, "temperature", "must be a number"),
    ({"max_tokens": 0}, "max_tokens", ">= 1"),
    ({"max_tokens": True}, "max_tokens", "must be an integer"),
    ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens", "differ"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "up to 4"),
    ({"stop": [""]}, "stop", "empty"),
    ({"top_logprobs": 2}, "top_logprobs", "logprobs: true"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "not supported"),
    ({"response_format": {"type": "json_object"}}, "response_format", "not supported"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed when 'stream' is enabled"),
    ({"frobnicate": 1}, "frobnicate", "Unrecognized request argument supplied: frobnicate"),
    ({"llmops": {"sesion_id": "x"}}, "llmops.sesion_id", "not an llmops option"),
    ({"llmops": {"metadata": {"k": 1}}}, "llmops.metadata.k", "must be a string"),
    ({"llmops": {"retrieval": {"topk": 1}}}, "llmops.retrieval.topk", "not a retrieval option"),
    ({"llmops": {"prompt_version": 0}}, "llmops.prompt_version", ">= 1"),
    ({"user": "a", "llmops": {"user_id": "b"}}, "user", "different users"),
    ({"messages": []}, "messages", "non-empty"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages[0]", "tool"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "'robot'"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
     "messages[0].content[0]", "is an image"),
    ({"messages": [{"role": "user", "content": "x"}] * (shapes.MAX_MESSAGES + 1)}, "messages", "at most"),
    ({"metadata": {f"k{i}": "v" for i in range(shapes.MAX_METADATA_ENTRIES + 1)}}, "metadata", "at most"),
])
def test_refused_chat_requests_name_the_parameter(body, param, words):
    err = refused(chat, **body)
    assert err.param == param and words in str(err)


def test_missing_messages_and_prompt():
    assert refused(shapes.parse_chat, {"model": "m"}, DEFAULT_MAX).code_name == "missing_required_parameter"
    assert refused(shapes.parse_completion, {"model": "m"}, DEFAULT_MAX).param == "prompt"


def test_completion_fields():
    call = shapes.parse_completion({"prompt": ["Say hi"], "max_tokens": 4, "echo": True}, DEFAULT_MAX)
    assert call.kind == "completion" and call.input.prompt == "Say hi" and call.echo
    assert call.input.params.max_new_tokens == 4 and call.input.model == ""
    lp = shapes.parse_completion({"prompt": "x", "logprobs": 3}, DEFAULT_MAX)
    assert lp.logprobs and lp.input.params.top_n_tokens == 3 and lp.input.params.details
    for body, param in (({"prompt": ["a", "b"]}, "prompt"), ({"prompt": [1, 2]}, "prompt"),
                        ({"prompt": "x", "best_of": 2}, "best_of"), ({"prompt": "x", "suffix": "y"}, "suffix"),
                        ({"prompt": "x", "logprobs": 6}, "logprobs"),
                        ({"prompt": "x", "messages": []}, "messages")):
        assert refused(shapes.parse_completion, body, DEFAULT_MAX).param == param


def result(text="Hello.", finish="eos_token", tokens=()):
    return GenerateResult(trace_id="ab" * 16, text=text, model="m", finish_reason=finish, prompt_tokens=10,
                          completion_tokens=3, contexts=[], latency_ms=12.5,
                          template=PromptTemplate("chat", 1, "", "{question}"), tokens=list(tokens))


def test_responses_have_openais_shape():
    out = shapes.full_response(chat(), result(), 1700000000)
    assert out["id"] == "chatcmpl-" + "ab" * 16 and out["object"] == "chat.completion" and out["model"] == "m"
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello.", "refusal": None},
                               "logprobs": None, "finish_reason": "stop"}]
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    assert out["llmops"]["trace_id"] == "ab" * 16 and out["llmops"]["prompt_template"] == "chat"
    c = shapes.full_response(shapes.parse_completion({"prompt": "Hi", "echo": True}, 8), result(finish="length"), 1)
    assert c["id"].startswith("cmpl-") and c["object"] == "text_completion"
    assert c["choices"][0]["text"] == "HiHello." and c["choices"][0]["finish_reason"] == "length"


def test_stop_sequences_are_left_out_of_the_text_and_the_stream():
    call = chat(stop=["END", "\n\n"])
    res = result("one two END", "stop_sequence")
    assert shapes.full_response(call, res, 1)["choices"][0]["message"]["content"] == "one two "
    hold = shapes.StopHoldback(call.stop)
    sent = "".join(hold.push(p) for p in ["one", " two", " E", "ND"])
    assert "END" not in sent and "one two ".startswith(sent)
    assert sent + hold.rest(shapes.visible_text(res.text, res.finish_reason, call.stop)) == "one two "
    no_stop = shapes.StopHoldback(())
    assert no_stop.push("a") == "a" and no_stop.push("b") == "b"


def test_logprobs_shapes():
    toks = [TokenOut(1, "Hi", -0.5, [("Hi", -0.5), ("Yo", -1.5)]), TokenOut(2, "!", -0.1, [("!", -0.1), (".", -2.0)])]
    lp = shapes.full_response(chat(logprobs=True, top_logprobs=2), result("Hi!", tokens=toks), 1)["choices"][0]["logprobs"]
    assert [e["token"] for e in lp["content"]] == ["Hi", "!"]
    assert lp["content"][0]["top_logprobs"][1] == {"token": "Yo", "logprob": -1.5, "bytes": [89, 111]}
    c = shapes.completion_logprobs(toks)
    assert c["tokens"] == ["Hi", "!"] and c["text_offset"] == [0, 2] and c["top_logprobs"][0] == {"Hi": -0.5, "Yo": -1.5}


def test_stream_chunks():
    call = chat(stream=True, stream_options={"include_usage": True})
    first = shapes.chunk(call, "t" * 32, 1, "m", "", first=True)
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"] == {"role": "assistant",
                                                                                         "content": ""}
    assert first["usage"] is None
    last = shapes.chunk(call, "t" * 32, 1, "m", None, "stop")
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "stop"
    u = shapes.usage_chunk(call, result(), 1)
    assert u["choices"] == [] and u["usage"]["total_tokens"] == 13
    assert shapes.finish_reason("eos_token") == "stop" and shapes.finish_reason("length") == "length"
