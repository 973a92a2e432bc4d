"""A gRPC client no one here wrote (grpcio, from PyPI) calling lodestar's echo
service through xDS: the channel target is xds:///SERVICE and grpcio's own
xDS resolver and balancers do the rest, from the management server named in
the bootstrap file GRPC_XDS_BOOTSTRAP points at. No generated code: the
request and reply are two small proto3 messages encoded by hand.

    GRPC_XDS_BOOTSTRAP=bootstrap.json python xds_client.py SERVICE

One channel for the whole run, driven by commands on stdin, one per line:

    calls N [HEADER=VALUE ...]   N calls (each with a 5 s deadline); prints
                                 {"ok": {INSTANCE: COUNT}, "errors": {CODE: COUNT}, "detail": LAST_ERROR}
    until INSTANCE               calls (1 s deadline each, at most 20 s) until one is
                                 served by INSTANCE; prints {"calls": N, "found": BOOL}
    quit                         exits
"""

import json
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "lodestar-test-support" / "python"))
from echo_proto import METHOD, decode_reply, encode_request  # noqa: E402


def reply_instance(buf: bytes) -> str:
    """The reply's `instance`."""
    return decode_reply(buf).get("instance", "")


def run_calls(stub, n, metadata):
    ok, errors, detail = {}, {}, None
    for _ in range(n):
        try:
            reply = stub(encode_request("hello"), metadata=metadata, timeout=5)
            instance = reply_instance(reply)
            ok[instance] = ok.get(instance, 0) + 1
        except grpc.RpcError as e:
            code = e.code().name
            errors[code] = errors.get(code, 0) + 1
            detail = e.details()
    return {"ok": ok, "errors": errors, "detail": detail}


def run_until(stub, instance):
    deadline = time.monotonic() + 20
    calls = 0
    while time.monotonic() < deadline:
        calls += 1
        try:
            if reply_instance(stub(encode_request("hello"), timeout=1)) == instance:
                return {"calls": calls, "found": True}
        except grpc.RpcError:
            pass
    return {"calls": calls, "found": False}


def main():
    service = sys.argv[1]
    with grpc.insecure_channel(f"xds:///{service}") as channel:
        stub = channel.unary_unary(
            METHOD,
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            if words[0] == "calls":
                metadata = [tuple(w.split("=", 1)) for w in words[2:]]
                print(json.dumps(run_calls(stub, int(words[1]), metadata)), flush=True)
            elif words[0] == "until":
                print(json.dumps(run_until(stub, words[1])), flush=True)
            else:
                print(json.dumps({"unknown_command": words[0]}), flush=True)


if __name__ == "__main__":
    main()
