"""ListTraces' filter of how a request was served: its own fields (route, deployment, version,
arm), or the same as terms of ``model``."""
import pytest

from llmops.common.errors import InvalidArgument
from llmops.tracing.store import TraceQuery
from llmops.tracing.traces import checked_query


def served(model: str) -> tuple:
    q = checked_query(TraceQuery(model=model))
    return q.model, q.route, q.deployment, q.deployment_version, q.arm


def test_a_plain_model_name_is_matched_as_before():
    assert served("smollm2-135m-instruct") == ("smollm2-135m-instruct", "", "", 0, "")
    assert served("llama3:8b") == ("llama3:8b", "", "", 0, "")     # a colon alone is no filter term


def test_route_deployment_version_and_arm_terms():
    assert served("deployment:smol") == ("", "", "smol", 0, "")
    assert served("deployment:smol@2") == ("", "", "smol", 2, "")
    assert served("route:chat arm:canary") == ("", "chat", "", 0, "canary")
    assert served(" arm:shadow  deployment:smol-next@1 model:m ") == ("m", "", "smol-next", 1, "shadow")


@pytest.mark.parametrize("model, message", [
    ("arm:blue", "arm is one of primary, canary, shadow"),
    ("deployment:smol@x", "the version after @ is a number from 1"),
    ("deployment:smol@0", "the version after @ is a number from 1"),
    ("deployment:@2", "the version after @ is a number from 1"),
    ("route:", "has no value"),
    ("route:chat version:2", "use route:NAME, deployment:NAME[@VERSION]"),
    ("route:chat route:other", "names route twice"),
])
def test_bad_terms_say_what_is_wrong(model, message):
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        checked_query(TraceQuery(model=model))


def test_the_fields_are_checked_and_do_not_mix_with_model_terms():
    assert checked_query(TraceQuery(deployment="smol", deployment_version=2, arm="canary")).deployment_version == 2
    for q, message in ((TraceQuery(arm="blue"), "arm is 'blue'"),
                       (TraceQuery(deployment_version=2), "set deployment too"),
                       (TraceQuery(deployment="smol", model="arm:canary"), "not both")):
        with pytest.raises(InvalidArgument, match=message):
            checked_query(q)
