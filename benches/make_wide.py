#!/usr/bin/env python3
"""A single safetensors file with N tensors whose names never fold (`model.x{i}.weight`, the
worst case for the human audit's tree), each one U8 byte: the header is everything.

  python3 benches/make_wide.py OUT.safetensors [--tensors 1000000]

Then compare the human audit with --json, e.g.
  /usr/bin/time -f '%e s %M KB' target/release/ckptpilot audit OUT.safetensors > /dev/null
  /usr/bin/time -f '%e s %M KB' target/release/ckptpilot audit OUT.safetensors --json > /dev/null
"""
import argparse
import json
import struct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tensors", type=int, default=1_000_000)
    a = ap.parse_args()
    header = {f"model.x{i}.weight": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(a.tensors)}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(a.out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(bytes(a.tensors))
    print(f"{a.out}: {a.tensors} tensors, header {len(text)} bytes")


if __name__ == "__main__":
    main()
