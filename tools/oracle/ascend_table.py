#!/usr/bin/env python3
"""The README table of vLLM-Ascend's supported list, from tools/oracle/ascend_supported.tsv.

    python3 tools/oracle/ascend_table.py           # print the markdown
    python3 tools/oracle/ascend_table.py --write   # replace the README block between the ascend markers

tests/families.rs renders the same table in Rust and fails when the README block differs.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TSV = os.path.join(ROOT, "tools", "oracle", "ascend_supported.tsv")
README = os.path.join(ROOT, "README.md")
BEGIN = "<!-- ascend:begin (python3 tools/oracle/ascend_table.py) -->"
END = "<!-- ascend:end -->"
STATUSES = ["verified", "failed", "drafted-needs-person", "not-registered", "not-attempted", "being-recorded"]


def rows():
    with open(TSV, encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
    return [l.split("\t") for l in lines[1:]]


def cell(s):
    return s.replace("|", "\\|")


def table():
    rs = rows()
    out = ["| vLLM-Ascend model | architecture | status | family, or why not verified |", "|---|---|---|---|"]
    for model, arch, status, reason in rs:
        out.append(f"| {cell(model)} | `{arch}` | {status} | {cell(reason)} |")
    by_arch = {arch: status for _, arch, status, _ in rs}
    counts = [f"{sum(1 for s in by_arch.values() if s == st)} {st}" for st in STATUSES]
    counts = [c for c in counts if not c.startswith("0 ")]
    out.append("")
    out.append(f"{len(rs)} rows, {len(by_arch)} architectures: {', '.join(counts)}.")
    return "\n".join(out) + "\n"


def main():
    t = table()
    if sys.argv[1:] == ["--write"]:
        with open(README, encoding="utf-8") as f:
            text = f.read()
        head, rest = text.split(BEGIN + "\n", 1)
        _, tail = rest.split(END, 1)
        with open(README, "w", encoding="utf-8") as f:
            f.write(head + BEGIN + "\n" + t + END + tail)
    else:
        sys.stdout.write(t)


if __name__ == "__main__":
    main()
