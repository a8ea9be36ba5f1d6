"""gRPC server reflection in both versions of the protocol: ``grpc.reflection.v1``, which current
clients speak (grpcurl, Postman, grpc-java, grpc-js), and ``grpc.reflection.v1alpha``, which older
ones speak.

grpcio-reflection 1.78 ships only v1alpha. The v1 protocol is the same one under another package
name (the same messages, field numbers and method), so the one v1alpha servicer answers both, and
a v1 file descriptor derived from v1alpha's lets reflection describe the v1 service itself.
"""
from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """``grpc/reflection/v1/reflection.proto``: v1alpha's file under the v1 package, with the
    options of the upstream v1 file."""
    old = reflection_pb2.DESCRIPTOR.package
    fdp = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(fdp)
    fdp.name, fdp.package = V1_FILE, V1_PACKAGE

    def renamed(type_name: str) -> str:
        return type_name.replace(f".{old}.", f".{V1_PACKAGE}.", 1)

    for message in fdp.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = renamed(field.type_name)
    for service in fdp.service:
        for method in service.method:
            method.input_type, method.output_type = renamed(method.input_type), renamed(method.output_type)
    fdp.options.Clear()
    fdp.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    fdp.options.java_multiple_files = True
    fdp.options.java_package = "io.grpc.reflection.v1"
    fdp.options.java_outer_classname = "ServerReflectionProto"
    return fdp


def _register_v1_file(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.AddSerializedFile(v1_file_descriptor().SerializeToString())


def enable_server_reflection(service_names: list[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both
    reflection services."""
    pool = descriptor_pool.Default()
    _register_v1_file(pool)
    servicer = reflection.aio.ReflectionServicer([*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME], pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        ),
    })
    server.add_generic_rpc_handlers((v1,))
