#!/usr/bin/env python3
"""An independent implementation of the intent v1 encoding and hash (docs/adr/0002), in
Python with only the standard library, checked against the published vectors. If this and
the Rust implementation ever disagree, one of them does not follow the spec."""
import hashlib
import json
import pathlib
import struct
import sys
import uuid

TAG = b"strongroom/intent/v1"
VECTORS = pathlib.Path(__file__).resolve().parent.parent / "crates/core/tests/vectors/intent-v1.json"


def text(s: str) -> bytes:
    b = s.encode("utf-8")
    assert len(b) <= 256, "field too long"
    return struct.pack(">H", len(b)) + b


def encode(intent: dict) -> bytes:
    asset = intent["asset"]
    contract = asset["contract"]["canonical"] if asset["contract"] else ""
    out = bytes([1])
    out += text(intent["chain"])
    out += text(asset["symbol"])
    out += bytes([asset["decimals"]])
    out += text(contract)
    out += text(intent["source_wallet"])
    out += text(intent["destination"]["canonical"])
    out += int(intent["amount"]).to_bytes(16, "big")
    out += int(intent["fee_cap"]).to_bytes(16, "big")
    out += struct.pack(">q", intent["expires_at"])
    out += uuid.UUID(intent["request_id"]).bytes
    return out


def tagged_hash(msg: bytes) -> str:
    tag = hashlib.sha256(TAG).digest()
    return hashlib.sha256(tag + tag + msg).hexdigest()


def main() -> int:
    doc = json.loads(VECTORS.read_text())
    for v in doc["valid"]:
        enc = encode(v["intent"])
        if enc.hex() != v["encoding_hex"]:
            print(f"FAIL encoding: {v['description']}")
            return 1
        if tagged_hash(enc) != v["hash_hex"]:
            print(f"FAIL hash: {v['description']}")
            return 1
    print(f"intent v1 vectors: all {len(doc['valid'])} match an independent Python implementation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
