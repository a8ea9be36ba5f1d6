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


def test_every_proto_names_its_go_and_java_packages():
    """Code generators for Go and Java need no flags (protoc-gen-go refuses a file without go_package)."""
    from llmops.protogen import proto_files
    from llmops.v1 import common_pb2, drift_pb2, events_pb2, inference_pb2, judging_pb2, retrieval_pb2, tracing_pb2

    files = [m.DESCRIPTOR for m in (common_pb2, drift_pb2, events_pb2, inference_pb2, judging_pb2, retrieval_pb2,
                                    tracing_pb2)]
    assert sorted(f.name for f in files) == proto_files()
    for f in files:
        opts = f.GetOptions()
        assert opts.go_package == "github.com/llmops/llmops/gen/go/llmops/v1;llmopsv1", f.name
        assert opts.java_package == "dev.llmops.v1" and opts.java_multiple_files, f.name
        # an outer class named like one of the file's messages would not compile
        assert opts.java_outer_classname.endswith("Proto") and opts.java_outer_classname not in f.message_types_by_name
