"""Generate the 4-bit fixtures and their bf16 references with the producers' own code (run by
tools/fixtures_fp4.sh, which pins the versions; see there). Usage: python fixtures_fp4.py REPO_ROOT OUT_DIR

Writes under OUT_DIR (each reference = the producer's own dequantization, bf16, one tensor per weight):
  gpt-oss-mxfp4 (+.reference)  fixtures/gpt-oss with every experts.gate_up_proj / down_proj (bf16 [E, in, out])
        replaced by the gpt-oss on-disk MXFP4 pair _blocks U8 [E, out, in/32, 16] + _scales U8 [E, out, in/32]
        (e8m0), config.json + the quantization_config of openai/gpt-oss-20b. transformers' MXFP4 quantizer needs
        the hub kernel kernels-community/gpt-oss-triton-kernels (not on PyPI, no hub here), so the codes are
        packed here: two e2m1 codes a byte, LOW nibble = even index along `in`, one e8m0 byte per 32 along `in`.
        Codes: seeded, every byte value 0..255 in every tensor; scales: seeded in 118..130 (2^-9 .. 2^3).
        Reference: transformers.integrations.mxfp4.convert_moe_packed_tensors(blocks, scales, bfloat16).
  mxfp4-edge (+.reference)     one _blocks/_scales pair in which every e8m0 scale byte 0..255 meets every
        block byte 0..255; same reference function.
  llama-nvfp4 (+.reference)    fixtures/llama, llm-compressor oneshot, preset NVFP4A16, data-free, lm_head
        ignored (compressed-tensors format nvfp4-pack-quantized).
  nvfp4-edge (+.reference)     one [32, 256] NVFP4 weight per global scale (0, subnormal, tiny, 1, 3, typical,
        huge, f32 max, inf, nan, -1): weight_scale = every F8_E4M3 byte twice, packed = every byte.
  llama-w4a16, llama-w4a16-asym (+.reference)  fixtures/llama, llm-compressor oneshot, int4 group 32 min-max RTN
        (symmetric / asymmetric), data-free, lm_head ignored (format pack-quantized).
  Reference for the compressed-tensors fixtures: the format's compressor decompress() (what
  ModelCompressor.decompress_model runs per module) on the tensors as stored.

Every directory is reloaded by its producer's loader (transformers for gpt-oss, transformers +
compressed-tensors for the others) and its weights compared bit for bit with the reference; the references
are also checked against independent formulas (mxfp4_formula, nvfp4_formula, int4_formula). Deterministic: seeded, data-free.
"""
import json
import os
import shutil
import struct
import sys

import compressed_tensors
import llmcompressor
import safetensors
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file

PINS = {"torch": "2.14.0", "transformers": "5.17.0", "safetensors": "0.8.0",
        "compressed-tensors": "0.19.0", "llmcompressor": "0.14.0.1"}
GPT_OSS_QC = {  # config.json of openai/gpt-oss-20b and -120b (and transformers' convert_gpt_oss_weights_to_hf.py)
    "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"],
    "quant_method": "mxfp4",
}
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def check_pins():
    got = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
           "safetensors": safetensors.__version__, "compressed-tensors": compressed_tensors.__version__,
           "llmcompressor": llmcompressor.__version__}
    if got != PINS:
        sys.exit(f"version pins differ: want {PINS}, have {got}")


def versions(*names):
    v = {"torch": torch.__version__, "transformers": transformers.__version__,
         "compressed_tensors": compressed_tensors.__version__, "llmcompressor": llmcompressor.__version__}
    return {f"{k}_version": v[k] for k in names}


def fresh(d):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_dir(d):
    """All tensors of a checkpoint directory, as stored."""
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(d, f)))
    return out


def same_bits(a, b):
    """Bit-for-bit equal (a NaN equals any NaN: payloads are not compared)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    both_nan = torch.isnan(a.float()) & torch.isnan(b.float())
    ia, ib = (t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32) for t in (a, b))
    return bool(((ia == ib) | both_nan).all())


def save_sorted(tensors, path, meta):
    """safetensors.torch.save_file, then its __metadata__ keys put in sorted order: safetensors keeps the metadata
    in a Rust HashMap, whose order changes from run to run (the tensor entries are already in a fixed order)."""
    save_file(tensors, path, metadata=meta)
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        raw = f.read(n)
        header = json.loads(raw)
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        new = json.dumps(header, separators=(",", ":")).encode()
        assert len(new) == len(raw.rstrip(b" ")), "header re-serialization changed its length"
        f.seek(8)
        f.write(new.ljust(n, b" "))


def save_ref(ref_dir, tensors, producer, *vers):
    fresh(ref_dir)
    meta = {"generator": "tools/fixtures_fp4.py", "producer": producer, **versions(*vers)}
    save_sorted(tensors, os.path.join(ref_dir, "dequant_bf16.safetensors"), meta)


# ---------------------------------------------------------------- MXFP4 (gpt-oss)

def mxfp4_codes(shape_out, n_in, gen):
    """Seeded MXFP4 pair for a weight with n_in inputs: blocks [*shape_out, n_in/32, 16], scales [*shape_out, n_in/32];
    the first 256 bytes of blocks are a permutation of 0..255, scales in 118..130."""
    g = n_in // 32
    blocks = torch.randint(0, 256, (*shape_out, g, 16), generator=gen, dtype=torch.int32)
    flat = blocks.view(-1)
    flat[:256] = torch.randperm(256, generator=gen, dtype=torch.int32)
    scales = torch.randint(118, 131, (*shape_out, g), generator=gen, dtype=torch.int32)
    return blocks.to(torch.uint8), scales.to(torch.uint8)


def mxfp4_formula(blocks, scales):
    """Independent check of convert_moe_packed_tensors: value = e2m1(code) * 2^(scale - 127), exact in f64, one
    rounding to bf16 (overflow -> inf, a zero code stays +-0 even at scale 0xFF); element 2j = low nibble of byte j;
    output [E, in, out] (the [E, out, in] of the blocks transposed)."""
    lut = torch.tensor(E2M1, dtype=torch.float64)
    b = blocks.long()
    vals = torch.stack((lut[b & 15], lut[b >> 4]), dim=-1).flatten(-2)  # [E, out, G, 32]
    exp = scales.double() - 127
    v = vals * torch.pow(2.0, exp).unsqueeze(-1)
    v = torch.where(vals == 0, vals, v)  # 0 * 2^128 is 0 here, not nan
    v = v.flatten(-2)
    return v.to(torch.bfloat16).transpose(1, 2).contiguous()


def gpt_oss_mxfp4(root, out):
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    src = os.path.join(root, "fixtures", "gpt-oss")
    d = fresh(os.path.join(out, "gpt-oss-mxfp4"))
    gen = torch.Generator().manual_seed(4)
    with safe_open(os.path.join(src, "model.safetensors"), "pt") as f:
        file_meta = f.metadata()
        names = list(f.keys())
        tensors = {k: f.get_tensor(k) for k in names}
    new, ref = {}, {}
    for k in sorted(names):
        t = tensors[k]
        if k.endswith((".mlp.experts.gate_up_proj", ".mlp.experts.down_proj")):
            assert t.dtype == torch.bfloat16 and t.dim() == 3
            e, n_in, n_out = t.shape
            blocks, scales = mxfp4_codes((e, n_out), n_in, gen)
            new[k + "_blocks"], new[k + "_scales"] = blocks, scales
            r = convert_moe_packed_tensors(blocks, scales, dtype=torch.bfloat16)
            assert r.dtype == torch.bfloat16 and tuple(r.shape) == (e, n_in, n_out), r.shape  # the bf16 layout again
            assert same_bits(r, mxfp4_formula(blocks, scales)), k
            ref[k] = r
        else:
            new[k] = t
    assert len(ref) == 4
    save_sorted(new, os.path.join(d, "model.safetensors"), file_meta)
    cfg = read_json(os.path.join(src, "config.json"))
    cfg["quantization_config"] = GPT_OSS_QC
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    save_ref(d + ".reference", ref, "transformers.integrations.mxfp4.convert_moe_packed_tensors(blocks, scales, "
             "dtype=torch.bfloat16)", "transformers", "torch")

    # Load as transformers does: Mxfp4Config(dequantize=True), and the plain load, which on a CPU without the
    # `kernels` package falls back to the same dequantization (convert_moe_packed_tensors).
    from transformers import AutoModelForCausalLM, Mxfp4Config
    for kw in ({"quantization_config": Mxfp4Config(dequantize=True)}, {}):
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16, **kw)
        sd = model.state_dict()
        for k, r in ref.items():
            assert same_bits(sd[k], r), k
        for k, t in new.items():
            if k in sd:
                assert torch.equal(sd[k], t), k
        assert set(sd) == set(ref) | {k for k in new if not k.endswith(("_blocks", "_scales"))}
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3, 4]]))
    print("gpt-oss-mxfp4: transformers loads it (dequantize=True and plain); experts == reference")


def mxfp4_edge(out):
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    d = fresh(os.path.join(out, "mxfp4-edge"))
    e, n_out, g = 4, 64, 16  # 4096 blocks: block i has scale byte i % 256 and bytes 16 * (i // 256) + 0..15
    i = torch.arange(e * n_out * g)
    scales = (i % 256).to(torch.uint8).reshape(e, n_out, g)
    blocks = (16 * (i // 256)).unsqueeze(1) + torch.arange(16)
    blocks = blocks.to(torch.uint8).reshape(e, n_out, g, 16)
    name = "model.layers.0.mlp.experts.down_proj"
    save_sorted({name + "_blocks": blocks, name + "_scales": scales}, os.path.join(d, "mxfp4_edge.safetensors"),
                {"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"quantization_config": GPT_OSS_QC}, f, indent=2, sort_keys=True)
        f.write("\n")
    r = convert_moe_packed_tensors(blocks, scales, dtype=torch.bfloat16)
    assert tuple(r.shape) == (e, g * 32, n_out) and same_bits(r, mxfp4_formula(blocks, scales))
    save_ref(d + ".reference", {name: r}, "transformers.integrations.mxfp4.convert_moe_packed_tensors(blocks, scales, "
             "dtype=torch.bfloat16)", "transformers", "torch")
    # Findings for the report: e2m1 values at scale bytes 0x00 and 0xFF.
    for s in (0, 1, 127, 254, 255):
        blk = (i % 256 == s).reshape(e, n_out, g).nonzero()[0].tolist()
        vals = r[blk[0], blk[2] * 32:(blk[2] + 1) * 32, blk[1]].float()
        codes = blocks[tuple(blk)]
        dec = {}
        for j in range(32):
            c = int(codes[j // 2]) >> (4 * (j % 2)) & 15
            dec.setdefault(f"{E2M1[c]:+}", float(vals[j]))
        print(f"mxfp4-edge: scale 0x{s:02X}:", dec)


# ---------------------------------------------------------------- compressed-tensors (llm-compressor)

def oneshot_llama(root, out, name, recipe):
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM
    d = fresh(os.path.join(out, name))
    model = AutoModelForCausalLM.from_pretrained(os.path.join(root, "fixtures", "llama"), dtype=torch.bfloat16)
    oneshot(model=model, recipe=recipe)
    model.save_pretrained(d, save_compressed=True, max_shard_size="100KB")
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)  # safetensors files come out 0600
    return d


def ct_scheme(d):
    from compressed_tensors.quantization import QuantizationConfig
    qc = QuantizationConfig.model_validate(read_json(os.path.join(d, "config.json"))["quantization_config"])
    (scheme,) = qc.config_groups.values()
    return scheme


def ct_decompress(tensors, scheme):
    """{prefix.weight: bf16} for every compressed module, by the format's compressor (as stored: no casts)."""
    from compressed_tensors.compressors import BaseCompressor
    comp = BaseCompressor.get_value_from_registry(scheme.format)
    ref = {}
    for k in sorted(tensors):
        if not k.endswith(".weight_packed"):
            continue
        p = k[: -len("weight_packed")]
        sd = {n[len(p):]: t for n, t in tensors.items() if n.startswith(p) and "." not in n[len(p):]}
        w = comp.decompress(sd, scheme)["weight"]
        assert w.dtype == torch.bfloat16, (k, w.dtype)
        ref[p + "weight"] = w.contiguous()
    return ref


def nvfp4_formula(packed, scale, gscale):
    """bf16( e2m1 * f32( f32(scale_e4m3) / global_scale_f32 ) ): the division rounded in f32, the product in f32,
    one rounding to bf16."""
    lut = torch.tensor(E2M1, dtype=torch.float32)
    b = packed.long()
    codes = torch.stack((lut[b & 15], lut[b >> 4]), dim=-1).flatten(-2)  # [N, K]
    s = scale.float() / gscale.float()
    return (codes.unflatten(-1, (-1, 16)) * s.unsqueeze(-1)).flatten(-2).to(torch.bfloat16)


def int4_formula(tensors, p, group):
    """bf16( (q - zp) * scale ): q, zp unpacked little-endian nibbles (element i of a word at bits 4i..4i+3,
    value = nibble - 8); the zero point packed the same way down the rows; the product exact in f32, one rounding."""
    def nib(x, n):  # int32 [..., W] -> int [..., 8W] (first n)
        x = x.long() & 0xFFFFFFFF
        return torch.stack([(x >> (4 * j)) & 15 for j in range(8)], dim=-1).flatten(-2)[..., :n] - 8
    n, k = tensors[p + "weight_shape"].tolist()
    q = nib(tensors[p + "weight_packed"], k)
    scale = tensors[p + "weight_scale"]
    zp = tensors.get(p + "weight_zero_point")
    zp = nib(zp.t(), n).t() if zp is not None else torch.zeros_like(scale, dtype=torch.long)
    x = (q.unflatten(-1, (-1, group)) - zp.unsqueeze(-1)).float() * scale.float().unsqueeze(-1)
    return x.flatten(-2).to(torch.bfloat16)


def check_ct_load(d, ref):
    """transformers + compressed-tensors load: dequantize=True (ModelCompressor.decompress_model at load) and the
    default compressed load (decompressed by the forward hook) both give the reference bit for bit."""
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig
    m = AutoModelForCausalLM.from_pretrained(d, quantization_config=CompressedTensorsConfig(dequantize=True))
    sd = m.state_dict()
    for k, r in ref.items():
        assert same_bits(sd[k], r), k
    m = AutoModelForCausalLM.from_pretrained(d)
    assert any(k.endswith("weight_packed") for k in m.state_dict())
    with torch.no_grad():
        m(torch.tensor([[1, 2, 3, 4]]))
    sd = m.state_dict()
    for k, r in ref.items():
        assert same_bits(sd[k], r), k


def llama_nvfp4(root, out):
    from llmcompressor.modifiers.quantization import QuantizationModifier
    recipe = QuantizationModifier(targets="Linear", scheme="NVFP4A16", ignore=["lm_head"])
    d = oneshot_llama(root, out, "llama-nvfp4", recipe)
    scheme = ct_scheme(d)
    tensors = read_dir(d)
    ref = ct_decompress(tensors, scheme)
    assert len(ref) == 14
    for k, r in ref.items():
        p = k[: -len("weight")]
        assert same_bits(r, nvfp4_formula(tensors[p + "weight_packed"], tensors[p + "weight_scale"],
                                          tensors[p + "weight_global_scale"])), k
    save_ref(d + ".reference", ref, "compressed_tensors NVFP4PackedCompressor.decompress",
             "compressed_tensors", "llmcompressor", "torch", "transformers")
    check_ct_load(d, ref)
    print("llama-nvfp4: transformers + compressed-tensors load it (dequantize=True and compressed); == reference")
    return d


def nvfp4_edge(out, nvfp4_dir):
    from compressed_tensors.compressors import BaseCompressor
    d = fresh(os.path.join(out, "nvfp4-edge"))
    scheme = ct_scheme(nvfp4_dir)
    comp = BaseCompressor.get_value_from_registry(scheme.format)
    # [32, 256]: 512 groups of 16; group i has scale byte i % 256. Groups 0..255 hold the 16 codes once each
    # (bytes 0x10 0x32 .. 0xFE rotated by i), groups 256..511 the bytes 8 * i + 0..7 (mod 256): every byte 8 times.
    i = torch.arange(512)
    first = torch.tensor([0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE])
    rows = [torch.roll(first, int(j)) if j < 256 else (8 * j + torch.arange(8)) % 256 for j in i]
    packed = torch.stack(rows).to(torch.uint8).reshape(32, 128)
    scale = (i % 256).to(torch.uint8).view(torch.float8_e4m3fn).reshape(32, 16)
    gscales = {"zero": 0.0, "min_subnormal": 2.0 ** -149, "tiny": 1e-30, "one": 1.0, "three": 3.0,
               "typical": 29568.0, "huge": 1e30, "f32_max": 3.4028234663852886e38, "inf": float("inf"),
               "nan": float("nan"), "minus_one": -1.0}
    tensors, ref, refused = {}, {}, {}
    for label, g in gscales.items():
        p = f"gs_{label}."
        sd = {"weight_packed": packed.clone(), "weight_scale": scale.clone(),
              "weight_global_scale": torch.tensor([g], dtype=torch.float32)}
        try:
            w = comp.decompress(sd, scheme)["weight"]
        except Exception as exc:  # noqa: BLE001 - reported, not a fixture
            refused[label] = repr(exc)
            continue
        assert w.dtype == torch.bfloat16 and same_bits(w, nvfp4_formula(packed, scale, sd["weight_global_scale"]))
        tensors.update({p + k: v for k, v in sd.items()})
        ref[p + "weight"] = w.contiguous()
    save_sorted(tensors, os.path.join(d, "nvfp4_edge.safetensors"), {"format": "pt"})
    qc = read_json(os.path.join(nvfp4_dir, "config.json"))["quantization_config"]
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"quantization_config": qc}, f, indent=2, sort_keys=True)
        f.write("\n")
    save_ref(d + ".reference", ref, "compressed_tensors NVFP4PackedCompressor.decompress",
             "compressed_tensors", "torch")
    print("nvfp4-edge: refused:", refused or "none")
    # Findings: code 6.0 (and 0) at a few scale bytes, per global scale.
    for label in ("zero", "one", "inf", "nan", "min_subnormal"):
        w = ref[f"gs_{label}.weight"].float().reshape(512, 16)
        row = {}
        for sb in (0x00, 0x01, 0x08, 0x7E, 0x7F, 0xFF):
            c = torch.tensor([int(b) for b in torch.roll(first, sb)])  # group sb: codes lo, hi of each byte
            codes = torch.stack((c & 15, c >> 4), dim=-1).flatten()
            row[f"0x{sb:02X}"] = (float(w[sb][codes == 7][0]), float(w[sb][codes == 0][0]))
        print(f"nvfp4-edge: gs={label}: (6.0, 0.0) at scale byte:", row)


def llama_w4a16(root, out, symmetric):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import QuantizationModifier
    name = "llama-w4a16" if symmetric else "llama-w4a16-asym"
    args = QuantizationArgs(num_bits=4, type="int", strategy="group", group_size=32, symmetric=symmetric, dynamic=False)
    recipe = QuantizationModifier(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=args)},
                                  ignore=["lm_head"])
    d = oneshot_llama(root, out, name, recipe)
    scheme = ct_scheme(d)
    tensors = read_dir(d)
    ref = ct_decompress(tensors, scheme)
    assert len(ref) == 14
    for k, r in ref.items():
        assert same_bits(r, int4_formula(tensors, k[: -len("weight")], 32)), k
    save_ref(d + ".reference", ref, "compressed_tensors PackedQuantizationCompressor.decompress",
             "compressed_tensors", "llmcompressor", "torch", "transformers")
    check_ct_load(d, ref)
    print(f"{name}: transformers + compressed-tensors load it (dequantize=True and compressed); == reference")


def main():
    check_pins()
    root, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    gpt_oss_mxfp4(root, out)
    mxfp4_edge(out)
    nvfp4_dir = llama_nvfp4(root, out)
    nvfp4_edge(out, nvfp4_dir)
    llama_w4a16(root, out, symmetric=True)
    llama_w4a16(root, out, symmetric=False)


if __name__ == "__main__":
    main()
