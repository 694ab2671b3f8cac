"""A real grpcio client against Berth's API port: health, reflection, and one Berth
call through stubs generated from the repository's protos.

Run by testkit/tests/grpc_python_clients.rs as
    python grpc_health_reflection.py ADDRESS API_KEY
with the generated `berth/v1/*_pb2*.py` on PYTHONPATH.
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from berth.v1 import sandboxes_pb2, sandboxes_pb2_grpc


def list_services(channel, path):
    """The services reflection at `path` lists (v1 and v1alpha share messages)."""
    call = channel.stream_stream(
        path,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    answers = call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    for answer in answers:
        return {service.name for service in answer.list_services_response.service}
    raise SystemExit(f"{path}: no answer")


def describe(channel, symbol):
    """The file descriptors reflection v1alpha gives for `symbol`, through its stub."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
    for answer in stub.ServerReflectionInfo(iter([request])):
        if answer.HasField("error_response"):
            raise SystemExit(f"reflection of {symbol}: {answer.error_response}")
        return answer.file_descriptor_response.file_descriptor_proto
    raise SystemExit(f"reflection of {symbol}: no answer")


def main():
    address, key = sys.argv[1], sys.argv[2]
    channel = grpc.insecure_channel(address)

    health = health_pb2_grpc.HealthStub(channel)
    # the server judges the fleet about once a second: watch until it says SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=15)
    for answer in watch:
        if answer.status == health_pb2.HealthCheckResponse.SERVING:
            watch.cancel()
            break
    for service in ["", "berth.v1.Sandboxes", "berth.v1.Admin"]:
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, (service, answer)
    print("health: SERVING")

    services = list_services(channel, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    for wanted in [
        "berth.v1.Sandboxes",
        "berth.v1.Admin",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ]:
        assert wanted in services, (wanted, services)
    # the worker mesh's services live on the mesh port, not here
    for unserved in ["berth.v1.ControlPlane", "berth.v1.WorkerService"]:
        assert unserved not in services, (unserved, services)
    alpha = list_services(channel, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert "berth.v1.Sandboxes" in alpha, alpha
    files = describe(channel, "berth.v1.Sandboxes")
    assert files, "no file descriptors for berth.v1.Sandboxes"
    print(f"reflection: {sorted(services)}")

    sandboxes = sandboxes_pb2_grpc.SandboxesStub(channel)
    metadata = [("x-api-key", key)]
    try:
        sandboxes.List(sandboxes_pb2.ListSandboxesRequest(), timeout=10)
        raise SystemExit("a call without a key was answered")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    sandbox = sandboxes.Create(
        sandboxes_pb2.CreateSandboxRequest(ttl="10m"), metadata=metadata, timeout=30
    )
    assert sandbox.id and sandbox.state == "running", sandbox
    result = sandboxes.Exec(
        sandboxes_pb2.ExecRequest(sandbox_id=sandbox.id, command="echo", args=["from python"]),
        metadata=metadata,
        timeout=30,
    )
    assert result.exit_code == 0, result
    assert result.stdout == b"from python\n", result.stdout
    sandboxes.Destroy(sandboxes_pb2.SandboxRef(id=sandbox.id), metadata=metadata, timeout=30)
    print(f"sandbox {sandbox.id}: created, exec'd, destroyed")
    print("OK")


if __name__ == "__main__":
    main()
