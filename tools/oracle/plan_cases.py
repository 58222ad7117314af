#!/usr/bin/env python3
"""Small checkpoints that probe vLLM's parallel-shape rules, for checking `ckptpilot plan` against the
vLLM 0.33.0 oracle (../shared/tools/vllm-oracle). Not used by the tests; the outcomes are recorded in
the plan issue's note and in tests/plan.rs where they became unit expectations.

    python3 tools/oracle/plan_cases.py OUT_DIR            # writes the checkpoints
    python3 tools/oracle/plan_cases.py OUT_DIR --run ORACLE_PY VENV_PYTHON CKPTPILOT

Pins as fixtures/generate.py: torch 2.15.0, transformers 4.57.1, safetensors 0.6.2.
"""
import json
import os
import subprocess
import sys

import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures"))
import generate as g  # noqa: E402  (block_quant, is_quantized_linear)
from safetensors.torch import load_file, save_file  # noqa: E402

QC = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}


def write(model, out, name, fp8=False):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    for f in ("generation_config.json",):
        if os.path.exists(os.path.join(d, f)):
            os.remove(os.path.join(d, f))
    if fp8:
        p = os.path.join(d, "model.safetensors")
        out_t = {}
        for k, v in load_file(p).items():
            if g.is_quantized_linear(k, v):
                q, s = g.block_quant(v)
                out_t[k], out_t[k + "_scale_inv"] = q, s
            else:
                out_t[k] = v
        save_file(out_t, p, metadata={"format": "pt"})
        c = json.load(open(os.path.join(d, "config.json")))
        c["quantization_config"] = QC
        json.dump(c, open(os.path.join(d, "config.json"), "w"), indent=2)
    return d


def moe(out, name, inter, experts=4, fp8=True, hidden=256):
    cfg = transformers.Qwen3MoeConfig(vocab_size=512, hidden_size=hidden, intermediate_size=512, moe_intermediate_size=inter,
                                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                      num_experts=experts, num_experts_per_tok=2, max_position_embeddings=4096,
                                      tie_word_embeddings=False, torch_dtype="bfloat16")
    torch.manual_seed(7)
    return write(transformers.Qwen3MoeForCausalLM(cfg).to(torch.bfloat16), out, name, fp8)


def dense(out, name, inter, heads, kv, hd, hidden, fp8=False, cls="qwen3"):
    kw = dict(vocab_size=512, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=1,
              num_attention_heads=heads, num_key_value_heads=kv, head_dim=hd, max_position_embeddings=4096,
              tie_word_embeddings=False, torch_dtype="bfloat16")
    torch.manual_seed(8)
    if cls == "qwen3":
        m = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**kw))
    else:
        m = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
    return write(m.to(torch.bfloat16), out, name, fp8)


# (case, tp, ep)
RUNS = [
    ("moe-fp8-i192", 2, False), ("moe-fp8-i192", 2, True),
    ("moe-fp8-i160", 1, False), ("moe-fp8-i160", 2, False),
    ("dense-fp8-i384", 2, False),
    ("llama-kv3", 2, False),
    ("moe-2exp", 4, False),
    ("llama-kv2", 4, False),
]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    g.check_pins()
    moe(out, "moe-fp8-i192", 192)
    moe(out, "moe-fp8-i160", 160)
    moe(out, "moe-2exp", 128, experts=2, fp8=False)
    dense(out, "dense-fp8-i384", 384, 4, 2, 64, 256, fp8=True)
    dense(out, "llama-kv3", 512, 6, 3, 64, 384, cls="llama")
    dense(out, "llama-kv2", 512, 8, 2, 32, 256, cls="llama")
    if "--run" not in sys.argv:
        return
    i = sys.argv.index("--run")
    oracle, py, ckptpilot = sys.argv[i + 1:i + 4]
    for case, tp, ep in RUNS:
        d = os.path.join(out, case)
        tag = f"{case}__tp{tp}{'__ep' if ep else ''}"
        res = os.path.join(out, tag + ".json")
        cmd = [py, oracle, d, "--tp", str(tp), "--max-model-len", "256", "--force-cpu-kernels", "--out", res]
        if ep:
            cmd.append("--ep")
        subprocess.run(cmd, capture_output=True)
        plan = subprocess.run([ckptpilot, "plan", d, "--tp", str(tp), "--ep", "on" if ep else "off", "--json",
                               "--max-model-len", "256"], capture_output=True, text=True)
        p = json.loads(plan.stdout)["configs"][0]
        rank0 = res if tp == 1 else res.replace(".json", "__rank0.json")
        r = json.load(open(rank0)) if os.path.exists(rank0) else {"stages": {}, "errors": []}
        build_errors = [f"{e['type']}: {e['message'][:200]}" for e in r["errors"] if e["phase"] in ("config", "build")]
        print(f"== {tag}: vLLM build={r['stages'].get('build')} errors={build_errors}")
        print(f"   ckptpilot verdict={p['verdict']} failures={[f['rule'] + ': ' + f['message'][:200] for f in p['failures']]}")


if __name__ == "__main__":
    main()
