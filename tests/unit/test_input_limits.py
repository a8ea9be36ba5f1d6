"""What a generation request may carry, on both doors: a request whose CompletionEvent could not
fit in one Kafka message is refused with INVALID_ARGUMENT (400 on the gateway) naming the field
and the limit."""
import pytest

from llmops.common.errors import InvalidArgument
from llmops.inference import openai_shapes as shapes
from llmops.inference.api import to_input
from llmops.inference.limits import DEFAULT_LIMITS, InputLimits
from llmops.v1 import inference_pb2

MB2 = "x" * (2 * 1024 * 1024)


def refused(req: inference_pb2.GenerateRequest) -> str:
    with pytest.raises(InvalidArgument) as info:
        to_input(req, 16)
    return str(info.value)


def test_a_2_mb_metadata_value_is_refused_naming_the_field_and_the_limit():
    msg = refused(inference_pb2.GenerateRequest(prompt="hi", metadata={"blob": MB2}))
    assert "metadata['blob']" in msg and "2097152 characters" in msg and "at most 4096 characters" in msg


@pytest.mark.parametrize("kw,field,limit", [
    ({"prompt": "é" * (DEFAULT_LIMITS.max_text_bytes // 2 + 1)}, "`prompt`", "at most 262144 bytes"),
    ({"messages": [inference_pb2.ChatMessage(role="user", content="x" * 200_000)] * 2}, "`messages`",
     "at most 262144 bytes"),
    ({"messages": [inference_pb2.ChatMessage(role="user", content="x")] * 257}, "`messages`", "at most 256"),
    ({"metadata": {f"k{i}": "v" for i in range(65)}}, "`metadata`", "at most 64"),
    ({"metadata": {"k" * 129: "v"}}, "`metadata` keys", "1 to 128 characters"),
    ({"metadata": {f"k{i}": "€" * 4000 for i in range(6)}}, "`metadata`", "at most 65536 bytes"),
    ({"session_id": "s" * 257}, "`session_id`", "at most 256 characters"),
    ({"user_id": "u" * 300}, "`user_id`", "at most 256 characters"),
    ({"prompt_template": "t" * 300}, "`prompt_template`", "at most 256 characters"),
    ({"model": "m" * 300}, "`model`", "at most 256 characters"),
    ({"retrieval": inference_pb2.RetrievalOptions(enabled=True, collection="c" * 300)}, "`retrieval.collection`",
     "at most 256 characters"),
])
def test_each_limit_names_its_field(kw, field, limit):
    req = inference_pb2.GenerateRequest(**({"prompt": "hi"} | kw) if "messages" not in kw else kw)
    msg = refused(req)
    assert field in msg and limit in msg


def test_requests_at_the_limits_pass():
    lim = DEFAULT_LIMITS
    req = inference_pb2.GenerateRequest(
        prompt="x" * lim.max_text_bytes, session_id="s" * lim.max_id_chars, user_id="u" * lim.max_id_chars,
        metadata={f"k{i:03d}": "v" * 1000 for i in range(lim.max_metadata_entries)})
    inp = to_input(req, 16)
    assert len(inp.prompt) == lim.max_text_bytes and len(inp.metadata) == 64


def test_limits_scale_with_the_largest_kafka_message():
    lim = InputLimits.for_message_bytes(4 * 1024 * 1024)
    assert (lim.max_text_bytes, lim.max_metadata_bytes) == (1024 * 1024, 256 * 1024)
    to_input(inference_pb2.GenerateRequest(prompt="x" * 1_000_000), 16, limits=lim)
    with pytest.raises(InvalidArgument, match="prompt"):
        to_input(inference_pb2.GenerateRequest(prompt="x" * 1_000_000), 16)


# -- the OpenAI door: the same limits, with `param` naming the field ---------------------------------
def chat(**body):
    return shapes.parse_chat({"messages": [{"role": "user", "content": "hi"}], **body}, 16)


def test_openai_door_refuses_a_2_mb_metadata_value_with_its_param():
    with pytest.raises(shapes.OpenAIRequestError) as info:
        chat(metadata={"blob": MB2})
    assert info.value.param == "metadata.blob" and "4096 characters" in str(info.value)


@pytest.mark.parametrize("call,param,limit", [
    (lambda: shapes.parse_chat({"messages": [{"role": "user", "content": "x" * 300_000}]}, 16), "messages",
     "at most 262144 bytes"),
    (lambda: shapes.parse_completion({"prompt": "x" * 300_000}, 16), "prompt", "at most 262144 bytes"),
    (lambda: chat(metadata={f"k{i}": "€" * 4000 for i in range(6)}), "metadata", "at most 65536 bytes"),
    (lambda: chat(llmops={"metadata": {f"k{i}": "€" * 4000 for i in range(6)}}), "llmops.metadata",
     "at most 65536 bytes"),
    (lambda: chat(model="m" * 300), "model", "at most 256 characters"),
])
def test_openai_door_refuses_what_an_event_could_not_carry(call, param, limit):
    with pytest.raises(InvalidArgument) as info:
        call()
    assert getattr(info.value, "param", None) == param and limit in str(info.value)
