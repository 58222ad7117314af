#!/usr/bin/env python3
"""Write only fixtures/qwen3-moe-fp8-experts with fixtures/generate.py's pinned writers (a full
`python3 fixtures/generate.py` writes it too, with every other fixture). Run from the repository root:

    python3 tools/fixtures_moe_experts.py
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import generate  # noqa: E402

generate.check_pins()
generate.qwen3_moe_fp8_experts()
