"""lodestar's echo messages for Python test clients, encoded by hand (two
small proto3 messages), so the clients need nothing but grpcio.

The clients under `crates/*/tests/python/` import it with

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "lodestar-test-support" / "python"))
"""

METHOD = "/lodestar.echo.v1.Echo/Say"

FIELDS = {1: "message", 2: "instance", 3: "service", 4: "version", 5: "color"}


def encode_request(message: str) -> bytes:
    """An `EchoRequest` with `message` (field 1)."""
    data = message.encode()
    # field 1 (message), wire type 2; the length fits one varint byte here.
    assert len(data) < 128
    return bytes([0x0A, len(data)]) + data


def varint(buf: bytes, i: int):
    """The varint at `buf[i:]` and the index after it."""
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def decode_reply(buf: bytes) -> dict:
    """An `EchoReply`'s string fields by name."""
    out, i = {}, 0
    while i < len(buf):
        key, i = varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, i = varint(buf, i)
            out[FIELDS.get(field, str(field))] = buf[i : i + n].decode()
            i += n
        elif wire == 0:
            _, i = varint(buf, i)
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out
