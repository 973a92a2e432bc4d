"""A gRPC client no one here wrote (grpcio, from PyPI) calling lodestar's echo
service through the gateway. Without generated code: the request and reply
are encoded by hand (two small proto3 messages), so nothing but grpcio is
needed.

    python echo_client.py HOST:PORT CALLS [COLOR]

Prints one JSON object per line: {"ok": {...reply fields...}} for an answer,
{"error": {"code": "UNAVAILABLE", "details": "..."}} for a status, then a
last line {"unknown_service": {...}} for a call to a service no route knows.
"""

import json
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "lodestar-test-support" / "python"))
from echo_proto import METHOD, decode_reply, encode_request  # noqa: E402


def call(channel, method, metadata):
    stub = channel.unary_unary(
        method,
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        reply = stub(encode_request("hello"), metadata=metadata, timeout=5)
        return {"ok": decode_reply(reply)}
    except grpc.RpcError as e:
        return {"error": {"code": e.code().name, "details": e.details()}}


def main():
    target, calls = sys.argv[1], int(sys.argv[2])
    metadata = [("lodestar-color", sys.argv[3])] if len(sys.argv) > 3 else []
    with grpc.insecure_channel(target) as channel:
        for _ in range(calls):
            print(json.dumps(call(channel, METHOD, metadata)), flush=True)
        print(json.dumps({"unknown_service": call(channel, "/ghost.v1.Ghost/Boo", [])}), flush=True)


if __name__ == "__main__":
    main()
