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

import grpc


def encode_request(message: str) -> bytes:
    data = message.encode()
    # field 1 (message), wire type 2; the length fits one varint byte here.
    assert len(data) < 128
    return bytes([0x0A, len(data)]) + data


def varint(buf: bytes, i: int):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def decode_reply(buf: bytes) -> dict:
    names = {1: "message", 2: "instance", 3: "service", 4: "version", 5: "color"}
    out, i = {}, 0
    while i < len(buf):
        key, i = varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, i = varint(buf, i)
            out[names.get(field, str(field))] = buf[i : i + n].decode()
            i += n
        elif wire == 0:
            _, i = varint(buf, i)
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


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
            print(json.dumps(call(channel, "/lodestar.echo.v1.Echo/Say", metadata)), flush=True)
        print(json.dumps({"unknown_service": call(channel, "/ghost.v1.Ghost/Boo", [])}), flush=True)


if __name__ == "__main__":
    main()
