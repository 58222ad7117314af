"""Turn an fp8 block-quantized checkpoint into a bf16 one for msModelSlim: every F8_E4M3 weight is replaced by its
PyTorch reference dequantization (REF.safetensors: the bf16 dequantization of each fp8 weight, under the weight's own
name), every *.weight_scale_inv / *.input_scale is dropped, every other tensor is kept bit for bit, shard file names
are kept, and config.json loses quantization_config (dtype bfloat16). Fails unless REF covers exactly the fp8 weights.
Usage: python fixtures_modelslim_fp8ref.py FP8_MODEL_DIR REF.safetensors DST_DIR"""
import json, os, shutil, sys
from safetensors import safe_open
from safetensors.torch import save_file
import torch

src, ref_path, dst = sys.argv[1:4]
DROP = (".weight_scale_inv", ".input_scale")
shutil.rmtree(dst, ignore_errors=True); os.makedirs(dst)

with open(os.path.join(src, "model.safetensors.index.json")) as f:
    index = json.load(f)
shards = sorted(set(index["weight_map"].values()))
ref = safe_open(ref_path, "pt")
ref_names = set(ref.keys())

fp8_names, weight_map, total_size, total_params = set(), {}, 0, 0
for shard in shards:
    out = {}
    with safe_open(os.path.join(src, shard), "pt") as f:
        for name in f.keys():  # header order
            if name.endswith(DROP):
                continue
            t = f.get_tensor(name)
            if t.dtype == torch.float8_e4m3fn:
                fp8_names.add(name)
                r = ref.get_tensor(name)  # KeyError if the reference misses it
                assert r.dtype == torch.bfloat16 and r.shape == t.shape, (name, r.dtype, r.shape, t.shape)
                t = r
            assert t.dtype in (torch.bfloat16, torch.float32), (name, t.dtype)
            out[name] = t.contiguous()
            weight_map[name] = shard
            total_size += t.numel() * t.element_size(); total_params += t.numel()
    save_file(out, os.path.join(dst, shard), metadata={"format": "pt"})
assert fp8_names == ref_names, ("reference != fp8 weights", sorted(fp8_names ^ ref_names))

index["metadata"] = {"total_parameters": total_params, "total_size": total_size}
index["weight_map"] = dict(sorted(weight_map.items()))
with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
    json.dump(index, f, indent=2)
with open(os.path.join(src, "config.json")) as f:
    config = json.load(f)
config.pop("quantization_config")
config["dtype"] = "bfloat16"
with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
print(f"{dst}: {len(fp8_names)} fp8 weights replaced by the reference, {len(weight_map)} tensors, {len(shards)} shards")
