# Regenerate the edge-case references (PYTHONHASHSEED=0, msModelSlim 26.1.0 venv of tools/fixtures_modelslim_mx.sh,
# after that script has run, so that $RUN/convert_w8a8_mxfp8_dense.yaml exists):
#   RUN=/tmp/msm/mx/run; T=src/convert/testdata/edge
#   for d in bf16 f16; do /tmp/msm/gen/venv/bin/python $T/make_edge.py $T/in-$d $d
#     (cd $RUN && PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES= /tmp/msm/gen/venv/bin/msmodelslim quant --model_path $OLDPWD/$T/in-$d \
#        --save_path /tmp/out-$d --device cpu --config_path $RUN/convert_w8a8_mxfp8_dense.yaml --model_type default \
#        --trust_remote_code False) && cp -r /tmp/out-$d $T/modelslim-$d; done
# An edge-case llama for msModelSlim's data-free W8A8_MXFP8 converter: K not a multiple of 32
# (hidden 48, intermediate 80), all-zero blocks, bf16-subnormal / e4m3-subnormal values, exact ties,
# amax just below a power of two (the bf16 log2 rounding), negative values rounding to zero.
import json, os, sys, torch
from safetensors.torch import save_file
out, dtype = sys.argv[1], {"bf16": torch.bfloat16, "f16": torch.float16}[sys.argv[2]]
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(7)
H, I, V, L = 48, 80, 64, 1
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
       "num_attention_heads": 3, "num_key_value_heads": 3, "head_dim": 16, "num_hidden_layers": L,
       "vocab_size": V, "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
       "torch_dtype": sys.argv[2] == "bf16" and "bfloat16" or "float16"}
json.dump(cfg, open(f"{out}/config.json", "w"), indent=2)
def w(n, k, scale):
    t = torch.randn(n, k, generator=g) * scale
    t[0, :] = 0                      # an all-zero row (zero blocks, K tail)
    t[1, :32] = 0; t[1, 5] = 7.96875 # amax just below 8: bf16 log2 rounds up
    t[2, :] = torch.randn(k, generator=g) * 1e-6   # tiny block (e4m3 subnormals)
    t[3, :8] = torch.tensor([1.0, -1.0, 1.0625, -1.0625, 1.1875, 0.0009765625, -0.0009765625, 2.0**-11])
    t[4, :] = -torch.rand(k, generator=g) * 1e-30 ; t[4, 0] = -1.0   # negatives flushing to -0
    t[5, :] = (torch.randn(k, generator=g) * 3e4).clamp(-60000, 60000)  # f16-finite
    return t.to(dtype)
T = {"model.embed_tokens.weight": w(V, H, 0.02), "lm_head.weight": w(V, H, 0.02), "model.norm.weight": torch.ones(H, dtype=dtype)}
for l in range(L):
    p = f"model.layers.{l}."
    for n, (a, b) in {"self_attn.q_proj": (H, H), "self_attn.k_proj": (H, H), "self_attn.v_proj": (H, H),
                      "self_attn.o_proj": (H, H), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}.items():
        T[p + n + ".weight"] = w(a, b, 0.05)
    T[p + "input_layernorm.weight"] = torch.ones(H, dtype=dtype)
    T[p + "post_attention_layernorm.weight"] = torch.ones(H, dtype=dtype)
save_file(T, f"{out}/model.safetensors", metadata={"format": "pt"})
