import filecmp

from llmops.protogen import SERVICES, generate


def test_generated_stubs_are_fresh(tmp_path):
    """Fails when protos/ changed but `make proto` was not run."""
    generate(tmp_path)
    fresh = tmp_path / "llmops" / "v1"
    committed = SERVICES / "llmops" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert "inference_pb2_grpc.py" in names and "events_pb2.py" in names
    committed_names = sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    assert committed_names == names, "generated file set differs: run `make proto`"
    match, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"stale generated code: {mismatch + errors}; run `make proto`"


def test_contract_names_exist():
    from llmops.v1 import drift_pb2, inference_pb2, judging_pb2, retrieval_pb2, tracing_pb2

    rpcs = {
        (inference_pb2, "InferenceService"): {"Generate", "GenerateStream", "ListModels"},
        (retrieval_pb2, "RetrievalService"): {"Upsert", "Search", "Delete"},
        (tracing_pb2, "TracingService"): {"GetTrace", "ListTraces", "SubmitFeedback"},
        (judging_pb2, "JudgingService"): {"Score", "ListEvaluators"},
        (drift_pb2, "DriftService"): {"GetStatus", "SetReference", "ListRetrainEvents"},
    }
    for (mod, svc), wanted in rpcs.items():
        assert mod.DESCRIPTOR.package == "llmops.v1"
        methods = set(mod.DESCRIPTOR.services_by_name[svc].methods_by_name)
        assert wanted <= methods, (svc, wanted - methods)
    stream = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].methods_by_name["GenerateStream"]
    assert stream.server_streaming
