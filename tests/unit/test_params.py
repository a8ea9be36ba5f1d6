import pytest

from llmops.common.errors import InvalidArgument
from llmops.inference.params import validate_parameters
from llmops.v1 import inference_pb2


def P(**kw):
    return inference_pb2.GenerationParameters(**kw)


def test_defaults_are_greedy_with_the_server_default_length():
    p = validate_parameters(P(), 128)
    assert p.max_new_tokens == 128 and not p.sampling and p.stop == ()


def test_any_sampling_knob_turns_sampling_on_like_tgi():
    assert validate_parameters(P(temperature=0.7), 10).sampling
    assert validate_parameters(P(top_k=5), 10).sampling
    assert validate_parameters(P(do_sample=True), 10).sampling


@pytest.mark.parametrize("kw,msg", [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": -3}, "max_new_tokens"),
    ({"temperature": 0.0}, "temperature"),
    ({"top_p": 1.0}, "top_p"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"temperature": float("nan")}, "temperature.*finite"),
    ({"temperature": float("inf")}, "temperature.*finite"),
    ({"repetition_penalty": float("nan")}, "repetition_penalty.*finite"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty.*finite"),
    ({"top_p": float("nan")}, "top_p"),
])
def test_invalid_values_name_the_parameter(kw, msg):
    with pytest.raises(InvalidArgument, match=msg):
        validate_parameters(P(**kw), 128)
