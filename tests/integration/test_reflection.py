"""gRPC server reflection as clients in other languages use it: a client that speaks only
``grpc.reflection.v1`` (as grpcurl, Postman and grpc-java do today) lists the services and
fetches their descriptors, and one that speaks only ``v1alpha`` still does too.

The v1 client's messages come from its own copy of the v1 protocol, compiled here, in a
descriptor pool of its own: nothing of the server's reflection code is shared with it."""
from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from llmops.common.server import GrpcServer
from llmops.v1 import tracing_pb2
from tests.support import make_settings

#: the messages of grpc/reflection/v1/reflection.proto a client needs (field numbers as upstream)
V1_CLIENT_PROTO = """
syntax = "proto3";
package grpc.reflection.v1;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    string list_services = 7;
  }
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
"""


def client_messages(tmp_path, package: str):
    """(request class, response class) of a reflection client of ``package``, from its own pool."""
    from grpc_tools import protoc

    (tmp_path / "reflection.proto").write_text(V1_CLIENT_PROTO.replace("grpc.reflection.v1", package))
    out = tmp_path / f"{package}.pb"
    assert protoc.main(["protoc", f"-I{tmp_path}", f"--descriptor_set_out={out}", "reflection.proto"]) == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.ServerReflectionRequest")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.ServerReflectionResponse")))


@pytest.fixture
async def server(tmp_path):
    s = make_settings(tmp_path / "data", "")
    srv = GrpcServer("tracing", s, [tracing_pb2.DESCRIPTOR.services_by_name["TracingService"].full_name])
    await srv.start()
    try:
        yield f"127.0.0.1:{srv.port}"
    finally:
        await srv.stop(0)


async def ask(target: str, package: str, request_cls, response_cls, requests):
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.stream_stream(f"/{package}.ServerReflection/ServerReflectionInfo",
                                request_serializer=request_cls.SerializeToString,
                                response_deserializer=response_cls.FromString)(iter(requests), timeout=10)
        return [r async for r in call]


@pytest.mark.parametrize("package", ["grpc.reflection.v1", "grpc.reflection.v1alpha"])
async def test_a_client_of_one_reflection_version_lists_and_describes_the_services(server, tmp_path, package):
    req, resp = client_messages(tmp_path, package)
    listed, tracing, own = await ask(server, package, req, resp, [
        req(list_services="*"),
        req(file_containing_symbol="llmops.v1.TracingService"),
        req(file_containing_symbol=f"{package}.ServerReflection"),
    ])
    names = {s.name for s in listed.list_services_response.service}
    assert names == {"llmops.v1.TracingService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                     "grpc.reflection.v1alpha.ServerReflection"}
    files = {f.name: f for f in map(descriptor_pb2.FileDescriptorProto.FromString,
                                    tracing.file_descriptor_response.file_descriptor_proto)}
    assert "TracingService" in {s.name for s in files["llmops/v1/tracing.proto"].service}
    assert files["llmops/v1/tracing.proto"].options.java_package == "dev.llmops.v1"
    # the reflection service describes itself, in the version that was asked
    (refl,) = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in own.file_descriptor_response.file_descriptor_proto
               if descriptor_pb2.FileDescriptorProto.FromString(b).package == package]
    method = refl.service[0].method[0]
    assert (refl.service[0].name, method.name) == ("ServerReflection", "ServerReflectionInfo")
    assert method.input_type == f".{package}.ServerReflectionRequest" and method.client_streaming


async def test_an_unknown_symbol_is_an_error_response_not_a_broken_stream(server, tmp_path):
    req, resp = client_messages(tmp_path, "grpc.reflection.v1")
    (answer,) = await ask(server, "grpc.reflection.v1", req, resp, [req(file_containing_symbol="no.such.Service")])
    assert answer.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
