"""The architectures tools/oracle/compile_family.py compiles with --spec / --all, in the order of
issue 22 item 3: vLLM-Ascend's supported list (as vLLM 0.33.0 registers it), then other popular
generative architectures transformers can instantiate.

Each entry: name (fixture directory), arch (config.json `architectures`, as vLLM's registry names it),
and optionally model_type (else found from transformers' auto mappings), hf_class (the transformers
class that writes the checkpoint, else `arch`), config (a real config.json to shrink), set (config
overrides after shrinking), tps ("1,2" default), hf_overrides (passed to the oracle).
"""


def rewrite(out, fn):
    """Load every tensor of the checkpoint in `out`, let `fn(dict)` edit the dict, write it back as two
    shards with an index (what post_write hooks use to make a fixture follow a published layout)."""
    import glob
    import json
    import os

    from safetensors.torch import load_file, save_file

    tensors = {}
    for f in sorted(glob.glob(os.path.join(out, "*.safetensors"))):
        tensors.update(load_file(f))
        os.remove(f)
    for f in glob.glob(os.path.join(out, "*.index.json")):
        os.remove(f)
    fn(tensors)
    names = sorted(tensors)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    shards, cur, size = [[]], 0, 0
    for n in names:
        if size >= total // 2 and len(shards) == 1:
            shards.append([])
        shards[-1].append(n)
        size += tensors[n].numel() * tensors[n].element_size()
    wm = {}
    for i, group in enumerate(shards):
        fn_ = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in group}, os.path.join(out, fn_), metadata={"format": "pt"})
        wm.update({n: fn_ for n in group})
    json.dump({"metadata": {"total_size": total}, "weight_map": wm},
              open(os.path.join(out, "model.safetensors.index.json"), "w"), indent=2, sort_keys=True)


def unfuse_experts(gate="gate_proj", up="up_proj", down="down_proj"):
    """transformers 5 keeps experts fused ([E, 2I, H] gate_up_proj, [E, H, I] down_proj) and, for some
    models, saves them so; published checkpoints hold one tensor per expert and projection."""

    def fn(t):
        for n in [n for n in t if n.endswith("experts.gate_up_proj") or n.endswith("experts.down_proj")]:
            w = t.pop(n)
            stem = n.rsplit(".", 1)[0]
            for e in range(w.shape[0]):
                if n.endswith("gate_up_proj"):
                    i = w.shape[1] // 2
                    t[f"{stem}.{e}.{gate}.weight"] = w[e, :i].clone()
                    t[f"{stem}.{e}.{up}.weight"] = w[e, i:].clone()
                else:
                    t[f"{stem}.{e}.{down}.weight"] = w[e].clone()

    return lambda out: rewrite(out, fn)


def transpose_fused_experts(out):
    """transformers 5 saves Qwen3-VL-MoE's fused experts in its internal layout ([E, 2I, H] gate_up_proj,
    [E, H, I] down_proj); the published checkpoints (Qwen3-VL-30B-A3B) hold [E, H, 2I] and [E, I, H],
    which is what vLLM's qwen3_vl_moe.py loads (the internal layout fails there with a size mismatch)."""

    def fn(t):
        for n in [n for n in t if n.endswith("experts.gate_up_proj") or n.endswith("experts.down_proj")]:
            t[n] = t[n].transpose(1, 2).contiguous()

    rewrite(out, fn)


def edit(drop=(), add=None):
    """Drop tensors by prefix, add random bf16 tensors {name: shape}."""

    def fn(t):
        import torch

        for n in [n for n in t if any(n.startswith(p) for p in drop)]:
            del t[n]
        for n, shape in (add or {}).items():
            t[n] = (torch.randn(*shape) * 0.02).to(torch.bfloat16)

    return lambda out: rewrite(out, fn)


def rename_prefix(pairs):
    """Rename tensors by prefix ({old: new}; where `new` extends `old`, a name already starting with `new`
    is left alone)."""

    def fn(t):
        for n in list(t):
            for a, b in pairs.items():
                if n.startswith(a) and not (b.startswith(a) and n.startswith(b)):
                    t[b + n[len(a):]] = t.pop(n)
                    break

    return lambda out: rewrite(out, fn)


# transformers 5 saves a CLIP / SigLIP vision tower inside a composite model without its `vision_model.`
# level (`vision_tower.embeddings...`); the published checkpoints (llava-hf/llava-1.5-7b-hf,
# llava-hf/llava-v1.6-*, llava-hf/llava-onevision-*, google/paligemma-*) hold
# `vision_tower.vision_model.embeddings...`, which is what vLLM's CLIPVisionModel / SiglipVisionModel load
# (the other layout fails there: "There is no module or parameter named 'vision_tower.embeddings'").
VISION_MODEL_LEVEL = rename_prefix({"vision_tower.": "vision_tower.vision_model."})


def config_set(path, value):
    """Set config.json's `path` (dotted) to `value` after transformers wrote it: for a value transformers
    rewrites when it saves (a config class's __post_init__ normalizing what the published config declares)."""

    def fn(out):
        import json
        import os

        p = os.path.join(out, "config.json")
        c = json.load(open(p))
        *parents, last = path.split(".")
        cur = c
        for k in parents:
            cur = cur.setdefault(k, {})
        cur[last] = value
        json.dump(c, open(p, "w"), indent=2, sort_keys=True)

    return fn


# transformers 5.20.2 loads MiniMax-M3 with `.block_sparse_moe.` -> `.mlp.` for every tensor
# (conversion_mapping.py, "minimax_m3_vl") and reverses it on save for every `.mlp.`: the vision tower's own
# `mlp.fc1` / `mlp.fc2` and a dense text layer's `mlp.gate_proj` / `up_proj` / `down_proj` come out as
# `block_sparse_moe.` too. vLLM 0.33.0 reads the published naming ("Dense layers store the FFN under `mlp`;
# MoE layers under `block_sparse_moe` -- matching the checkpoint's naming", minimax_m3/nvidia/model.py; its
# mapper's `.mlp.fc1.` -> `.fc1.` for the vision tower; the third run: KeyError:
# 'vision_model.encoder.layers.0.block_sparse_moe.fc1.bias'): those names are put back.
def minimax_mlp_names(out):
    import re

    def fn(t):
        for n in list(t):
            m = n.replace(".block_sparse_moe.fc", ".mlp.fc") if n.startswith("vision_tower.") else \
                re.sub(r"\.block_sparse_moe\.(gate_proj|up_proj|down_proj)\.", r".mlp.\1.", n)
            if m != n:
                t[m] = t.pop(n)

    rewrite(out, fn)


def _model_type_of(hf_class):
    from transformers.models.auto import modeling_auto as m

    for attr in dir(m):
        table = getattr(m, attr)
        if attr.endswith("_MAPPING_NAMES") and isinstance(table, dict):
            for mt, cls in table.items():
                if cls == hf_class or (isinstance(cls, (tuple, list)) and hf_class in cls):
                    return mt
    return None


_RAW = [
    # vLLM-Ascend's list
    dict(name="phi3", arch="Phi3ForCausalLM"),
    dict(name="gemma2", arch="Gemma2ForCausalLM"),
    dict(name="glm4", arch="Glm4ForCausalLM"),
    dict(name="ernie4_5", arch="Ernie4_5ForCausalLM"),
    dict(name="ernie4_5_moe", arch="Ernie4_5_MoeForCausalLM"),
    dict(name="hunyuan-dense", arch="HunYuanDenseV1ForCausalLM"),
    dict(name="hunyuan-moe", arch="HunYuanMoEV1ForCausalLM"),
    # transformers' MiniMaxM2Config has no rotary_dim, which vLLM's minimax_m2.py reads: the real config, shrunk.
    dict(name="minimax-m2", arch="MiniMaxM2ForCausalLM", config="../shared/corpus/configs/MiniMaxAI--MiniMax-M2.5/config.json"),
    dict(name="internlm2", arch="InternLM2ForCausalLM"),
    dict(name="minicpm", arch="MiniCPMForCausalLM"),
    dict(name="minicpm3", arch="MiniCPM3ForCausalLM"),
    dict(name="mistral3", arch="Mistral3ForConditionalGeneration"),
    dict(name="llama4", arch="Llama4ForConditionalGeneration",
         config="../shared/corpus/configs/meta-llama--Llama-4-Scout-17B-16E-Instruct/config.json"),
    dict(name="qwen3-vl-moe", arch="Qwen3VLMoeForConditionalGeneration",
         config="../shared/corpus/configs/Qwen--Qwen3-VL-30B-A3B-Instruct/config.json",
         post_write=lambda out: transpose_fused_experts(out)),
    dict(name="qwen3_5", arch="Qwen3_5ForConditionalGeneration"),
    dict(name="qwen3_5-moe", arch="Qwen3_5MoeForConditionalGeneration"),
    dict(name="glm-moe-dsa", arch="GlmMoeDsaForCausalLM", config="../shared/corpus/configs/zai-org--GLM-5-FP8/config.json"),
    # Reward models as published (Qwen2.5-Math-RM / -PRM): no lm_head, a two-layer `score` head.
    dict(name="qwen2-rm", arch="Qwen2ForRewardModel", hf_class="Qwen2ForCausalLM", model_type="qwen2",
         post_write=lambda out: edit(drop=["lm_head."], add={"score.0.weight": [64, 64], "score.0.bias": [64],
                                                              "score.2.weight": [1, 64], "score.2.bias": [1]})(out)),
    dict(name="qwen2-prm", arch="Qwen2ForProcessRewardModel", hf_class="Qwen2ForCausalLM", model_type="qwen2",
         post_write=lambda out: edit(drop=["lm_head."], add={"score.0.weight": [64, 64], "score.0.bias": [64],
                                                              "score.2.weight": [2, 64], "score.2.bias": [2]})(out)),
    dict(name="qwen2-embed", arch="Qwen2Model", hf_class="Qwen2Model", model_type="qwen2"),
    dict(name="qwen3-embed", arch="Qwen3Model", hf_class="Qwen3Model", model_type="qwen3"),
    dict(name="qwen3-seqcls", arch="Qwen3ForSequenceClassification", model_type="qwen3"),
    dict(name="qwen2-moe", arch="Qwen2MoeForCausalLM"),
    # other popular generative architectures
    dict(name="phi", arch="PhiForCausalLM"),
    dict(name="starcoder2", arch="Starcoder2ForCausalLM"),
    dict(name="cohere", arch="CohereForCausalLM"),
    dict(name="cohere2", arch="Cohere2ForCausalLM"),
    dict(name="granite", arch="GraniteForCausalLM"),
    dict(name="granitemoe", arch="GraniteMoeForCausalLM"),
    dict(name="olmo", arch="OlmoForCausalLM"),
    dict(name="olmoe", arch="OlmoeForCausalLM"),
    dict(name="olmo3", arch="Olmo3ForCausalLM"),
    dict(name="falcon", arch="FalconForCausalLM"),
    dict(name="gpt-neox", arch="GPTNeoXForCausalLM"),
    dict(name="stablelm", arch="StableLmForCausalLM"),
    dict(name="exaone4", arch="Exaone4ForCausalLM"),
    dict(name="gemma", arch="GemmaForCausalLM"),
    # gelu_new is a CUDA-wheel custom op with no CPU kernel, and vLLM builds the activation with the
    # model: plain gelu instead (an activation, not a weight: names and shapes are unchanged).
    dict(name="gpt2", arch="GPT2LMHeadModel", set={"activation_function": "gelu"}),
    dict(name="gptj", arch="GPTJForCausalLM", set={"activation_function": "gelu"}),
    dict(name="gpt-bigcode", arch="GPTBigCodeForCausalLM"),
    dict(name="bloom", arch="BloomForCausalLM"),
    dict(name="opt", arch="OPTForCausalLM"),
    dict(name="phimoe", arch="PhiMoEForCausalLM", hf_class="PhimoeForCausalLM"),
    # transformers 5's DbrxAttentionConfig has no rope_theta default, yet its attention reads attn_config.rope_theta;
    # the published databricks/dbrx-instruct config.json carries attn_config {clip_qkv 8, kv_n_heads 8,
    # rope_theta 500000}: set as published (kv_n_heads 2 of the tiny 4 heads, clip_qkv 8)
    dict(name="dbrx", arch="DbrxForCausalLM",
         set={"attn_config.rope_theta": 500000, "attn_config.kv_n_heads": 2, "attn_config.clip_qkv": 8,
              # ffn_config is DBRX's own sub-config (published: ffn_hidden_size 10752, 16 experts, top 4): shrunk
              "ffn_config.ffn_hidden_size": 96, "ffn_config.moe_num_experts": 4, "ffn_config.moe_top_k": 2}),
    dict(name="nemotron", arch="NemotronForCausalLM"),
    dict(name="arcee", arch="ArceeForCausalLM"),
    dict(name="smollm3", arch="SmolLM3ForCausalLM"),
    dict(name="glm", arch="GlmForCausalLM"),
    dict(name="helium", arch="HeliumForCausalLM"),
    dict(name="seed-oss", arch="SeedOssForCausalLM"),
    dict(name="mpt", arch="MptForCausalLM"),
    dict(name="dots1", arch="Dots1ForCausalLM"),
    dict(name="deepseek-v2", arch="DeepseekV2ForCausalLM"),
    dict(name="bamba", arch="BambaForCausalLM"),
    dict(name="apertus", arch="ApertusForCausalLM"),
    dict(name="granitemoeshared", arch="GraniteMoeSharedForCausalLM"),
    dict(name="granitemoehybrid", arch="GraniteMoeHybridForCausalLM"),
    dict(name="jamba", arch="JambaForCausalLM"),
    dict(name="persimmon", arch="PersimmonForCausalLM"),
    dict(name="gpt-oss-tiny", arch="GptOssForCausalLM"),
    dict(name="mixtral-tiny", arch="MixtralForCausalLM"),
    dict(name="mistral-tiny", arch="MistralForCausalLM"),
    dict(name="qwen3-moe-tiny", arch="Qwen3MoeForCausalLM"),
    dict(name="ministral", arch="MinistralForCausalLM"),
    dict(name="hunyuan-v1", arch="HunYuanDenseV1ForCausalLM"),
    dict(name="zamba2", arch="Zamba2ForCausalLM"),
    dict(name="falcon-h1", arch="FalconH1ForCausalLM"),
    # vLLM's lfm2.py reads config.block_dim (Lfm2MLP's dim, Lfm2DecoderLayer / Lfm2AttentionDecoderLayer)
    # and config.conv_dim (Lfm2ShortConv, Lfm2ShortConvDecoderLayer), which transformers 5's Lfm2Config does
    # not define; the published LiquidAI/LFM2-* config.json files carry both, equal to hidden_size
    # (LFM2-1.2B: block_dim 2048, conv_dim 2048, hidden_size 2048): set as published
    # layer_types: the published configs mix short-convolution and attention blocks (LFM2-1.2B: 10 "conv", 6
    # "full_attention"); transformers' default for 2 layers is attention only, which would leave the conv
    # blocks untested: one of each
    dict(name="lfm2", arch="Lfm2ForCausalLM", set={"block_dim": "@hidden_size", "conv_dim": "@hidden_size",
                                                   "layer_types": ["conv", "full_attention"]}),
    dict(name="bailing-moe", arch="BailingMoeV2ForCausalLM"),
    # vLLM's longcat_flash.py reads config.mla_scale_q_lora / mla_scale_kv_lora (FlashDecoderLayer's MLA norm
    # scaling) and config.zero_expert_type (LongcatMoe: `assert config.zero_expert_type is not None`), which
    # transformers 5's LongcatFlashConfig does not define; meituan-longcat/LongCat-Flash-Chat's own
    # configuration_longcat_flash.py (its remote code, the published config's class) defaults them to
    # True / True / "identity": set as published
    dict(name="longcat-flash", arch="LongcatFlashForCausalLM",
         set={"mla_scale_q_lora": True, "mla_scale_kv_lora": True, "zero_expert_type": "identity"}),
    dict(name="openai-gpt", arch="OpenAIGPTLMHeadModel"),
    dict(name="gemma3n", arch="Gemma3nForConditionalGeneration"),
    dict(name="paligemma", arch="PaliGemmaForConditionalGeneration", post_write=VISION_MODEL_LEVEL),
    # CLIP's quick_gelu is a CUDA-wheel custom op with no CPU kernel (vLLM builds the activation with the
    # tower: "'_C' object has no attribute 'gelu_quick'"): plain gelu instead, an activation, not a weight.
    dict(name="llava", arch="LlavaForConditionalGeneration", set={"vision_config.hidden_act": "gelu"}, post_write=VISION_MODEL_LEVEL),
    dict(name="qwen2-vl", arch="Qwen2VLForConditionalGeneration"),
    dict(name="chameleon", arch="ChameleonForConditionalGeneration"),
    dict(name="aria", arch="AriaForConditionalGeneration"),
    dict(name="idefics3", arch="Idefics3ForConditionalGeneration"),
    dict(name="smolvlm", arch="SmolVLMForConditionalGeneration"),
    # more generative architectures vLLM 0.33.0 registers and the venv's transformers can build
    # (vLLM's _TEXT_GENERATION_MODELS / _MULTIMODAL_MODELS / _TRANSFORMERS_SUPPORTED_MODELS intersected
    # with transformers' auto mappings), most used first
    dict(name="gemma4-text", arch="Gemma4ForCausalLM"),
    dict(name="gemma4", arch="Gemma4ForConditionalGeneration"),
    # the text-only classes take the text sub-config (the auto mapping names the composite's model type)
    dict(name="qwen3_5-text", arch="Qwen3_5ForCausalLM", model_type="qwen3_5_text"),
    dict(name="qwen3_5-moe-text", arch="Qwen3_5MoeForCausalLM", model_type="qwen3_5_moe_text"),
    dict(name="ministral3", arch="Ministral3ForCausalLM"),
    dict(name="llava-next", arch="LlavaNextForConditionalGeneration", set={"vision_config.hidden_act": "gelu"}, post_write=VISION_MODEL_LEVEL),
    dict(name="llava-onevision", arch="LlavaOnevisionForConditionalGeneration", post_write=VISION_MODEL_LEVEL),
    dict(name="internvl", arch="InternVLForConditionalGeneration"),
    # transformers 5 saves Qwen2-Audio's language model as `language_model.model.model.*`; the published
    # checkpoints (Qwen/Qwen2-Audio-7B-Instruct) hold `language_model.model.*` and `language_model.lm_head.*`,
    # which is what vLLM's qwen2_audio.py loads.
    dict(name="qwen2-audio", arch="Qwen2AudioForConditionalGeneration",
         post_write=rename_prefix({"language_model.model.model.": "language_model.model."})),
    # transformers 5's Glm4vTextConfig has no attention_bias, yet its text model always writes q/k/v biases;
    # vLLM reads getattr(text_config, "attention_bias", False), and the published GLM-4.1V / GLM-4.5V
    # configs say true: set as published (without it vLLM silently drops the biases)
    dict(name="glm4v", arch="Glm4vForConditionalGeneration", set={"text_config.attention_bias": True}),
    # vLLM's glm4_moe.py (Glm4MoeDecoderLayer, the text model glm4_1v.py builds) reads config.head_dim and
    # config.use_qk_norm, which transformers 5's Glm4vMoeTextConfig does not define. The published
    # zai-org/GLM-4.5V text_config carries head_dim (128, not hidden_size / heads); transformers' text
    # attention takes getattr(config, "head_dim", hidden // heads) and has no q/k norm, so the published
    # checkpoints have none: head_dim as the size table's, use_qk_norm false
    dict(name="glm4v-moe", arch="Glm4vMoeForConditionalGeneration",
         set={"text_config.head_dim": "@head_dim", "text_config.use_qk_norm": False}),
    dict(name="gemma3n-text", arch="Gemma3nForCausalLM"),
    dict(name="mamba", arch="MambaForCausalLM"),
    dict(name="mamba2", arch="Mamba2ForCausalLM"),
    dict(name="falcon-mamba", arch="FalconMambaForCausalLM"),
    dict(name="nemotron-h", arch="NemotronHForCausalLM"),
    dict(name="whisper", arch="WhisperForConditionalGeneration"),
    dict(name="voxtral", arch="VoxtralForConditionalGeneration"),
    # the SigLIP tower's `vision_model.` level, as for llava / paligemma (VISION_MODEL_LEVEL): transformers 5 saves
    # `model.vision_tower.embeddings...`; transformers 4's Cohere2Vision (AutoModel over the SigLIP config:
    # SiglipVisionModel, whose weights live under `vision_model.`), which wrote the published
    # CohereLabs/command-a-vision-07-2025 checkpoint, saved `model.vision_tower.vision_model...`, the names
    # vLLM's SiglipVisionModel loads (the other layout: "no module or parameter named 'vision_tower.embeddings'")
    dict(name="cohere2-vision", arch="Cohere2VisionForConditionalGeneration",
         post_write=rename_prefix({"model.vision_tower.": "model.vision_tower.vision_model."})),
    # the text model is LFM2's: block_dim / conv_dim as published (see lfm2 above). The SigLIP2 tower keeps its
    # `vision_model.` level as in the published LiquidAI/LFM2-VL checkpoints (written by transformers 4's
    # Siglip2VisionModel; transformers 5 saves `model.vision_tower.embeddings...`, which vLLM's Siglip2Model
    # refuses: "no module or parameter named 'embeddings' in Siglip2Model")
    dict(name="lfm2-vl", arch="Lfm2VlForConditionalGeneration",
         set={"text_config.block_dim": "@text_config.hidden_size", "text_config.conv_dim": "@text_config.hidden_size",
              "text_config.layer_types": ["conv", "full_attention"],
              # no SigLIP2 pooling head: vLLM's lfm2_vl.py builds Siglip2Model without one (a head tensor fails to
              # load: "no module or parameter named 'vision_model.head' in Siglip2Model"), and it serves the
              # published LFM2-VL checkpoints, whose vision_config says vision_use_head false
              "vision_config.vision_use_head": False},
         post_write=rename_prefix({"model.vision_tower.": "model.vision_tower.vision_model."})),
    # transformers 5's Lfm2MoeConfig defaults layer_types to None and its decoder layers index it; the published
    # LiquidAI/LFM2-8B-A1B config.json lists one entry per layer ("conv" / "full_attention") and
    # num_dense_layers 2 of 24: here one conv and one attention layer, the first dense (so one MoE layer remains)
    dict(name="lfm2-moe", arch="Lfm2MoeForCausalLM", set={"layer_types": ["conv", "full_attention"], "num_dense_layers": 1}),
    # transformers 5's Glm4MoeLiteConfig has no first_k_dense_replace, which vLLM's glm4_moe_lite.py reads
    # (the published zai-org/GLM-4.7-Flash config.json carries it): set as the published config does
    dict(name="glm4-moe-lite", arch="Glm4MoeLiteForCausalLM", set={"first_k_dense_replace": 1}),
    dict(name="exaone-moe", arch="ExaoneMoeForCausalLM"),
    dict(name="cohere2-moe", arch="Cohere2MoeForCausalLM"),
    dict(name="granite-swa", arch="GraniteSWAForCausalLM"),
    dict(name="granitemoe-swa", arch="GraniteMoeSWAForCausalLM"),
    dict(name="kimi-linear", arch="KimiLinearForCausalLM"),
    # transformers 5's AfmoeConfig lacks routing keys vLLM's afmoe.py reads (the published arcee-ai Trinity
    # configs carry them): score_func, route_norm, n_group, topk_group (routing only, not weights)
    dict(name="afmoe", arch="AfmoeForCausalLM",
         set={"score_func": "sigmoid", "route_norm": True, "n_group": 1, "topk_group": 1}),
    dict(name="vaultgemma", arch="VaultGemmaForCausalLM"),
    dict(name="flex-olmo", arch="FlexOlmoForCausalLM"),
    dict(name="cwm", arch="CwmForCausalLM"),
    dict(name="jais2", arch="Jais2ForCausalLM"),
    dict(name="mellum", arch="MellumForCausalLM"),
    dict(name="kolibri1", arch="Kolibri1ForCausalLM"),
    dict(name="olmo-hybrid", arch="OlmoHybridForCausalLM"),
    dict(name="blip2", arch="Blip2ForConditionalGeneration"),
    dict(name="llava-next-video", arch="LlavaNextVideoForConditionalGeneration", set={"vision_config.hidden_act": "gelu"}, post_write=VISION_MODEL_LEVEL),
    dict(name="emu3", arch="Emu3ForConditionalGeneration"),
    dict(name="hunyuan-vl", arch="HunYuanVLForConditionalGeneration"),
    dict(name="qwen2_5-omni", arch="Qwen2_5OmniForConditionalGeneration"),
    # vLLM-Ascend's supported list, tried in session 2026-12-07 (third): transformers 5.20.2 has classes for these
    # vLLM's deepseek_v4/compressor.py builds its fused quant+cache only for head_dim 512 or 128 (ValueError
    # otherwise, as the first try with the shrunk head_dim 32 recorded): the published 512 and rope 64
    dict(name="deepseek-v4", arch="DeepseekV4ForCausalLM", model_type="deepseek_v4",
         set={"head_dim": 512, "qk_rope_head_dim": 64}),
    dict(name="deepseek-ocr2", arch="DeepseekOCR2ForCausalLM", hf_class="DeepseekOcr2ForConditionalGeneration",
         model_type="deepseek_ocr2"),
    # Qwen3-Omni nests thinker (text / vision / audio), talker (text / code predictor) and code2wav configs,
    # which the compiler does not shrink (top-level sub-configs only; transformers building them at full size
    # killed qwen2_5-omni for memory here): each given whole, small and with sizes distinct per tower. vLLM
    # 0.33.0 builds the thinker only. talker_config.spatial_merge_size: transformers 5.20.2's talker reads it
    # (AttributeError without it), as the vision tower's (2). vision_config.image_size and apply_vit_abs_pos_embed:
    # vLLM 0.33.0's Qwen3Omni_VisionTransformer reads both (the first run: AttributeError: no attribute
    # 'image_size'), transformers 5's vision config has neither: its pos_embed is an nn.Embedding of
    # num_position_embeddings = (image_size / patch_size)^2 rows (its defaults: 2304 = (768 / 16)^2), so 32 = 4 x 8
    # here and True (vLLM's nn.Embedding branch). thinker text_config.tie_word_embeddings: vLLM reads it there (the
    # second run: AttributeError), transformers 5 keeps it on the thinker config (False): the same value
    dict(name="qwen3-omni-moe", arch="Qwen3OmniMoeForConditionalGeneration", model_type="qwen3_omni_moe",
         set={
             "thinker_config": {
                 "text_config": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                                 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                                 "moe_intermediate_size": 64, "num_experts": 4, "num_experts_per_tok": 2,
                                 "max_position_embeddings": 256, "tie_word_embeddings": False},
                 "vision_config": {"depth": 3, "hidden_size": 48, "intermediate_size": 56, "num_heads": 2, "patch_size": 8,
                                   "out_hidden_size": 64, "num_position_embeddings": 16, "deepstack_visual_indexes": [1],
                                   "image_size": 32, "apply_vit_abs_pos_embed": True},
                 "audio_config": {"d_model": 72, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 88,
                                  "output_dim": 64, "downsample_hidden_size": 16, "max_source_positions": 60},
             },
             "talker_config": {
                 "text_config": {"vocab_size": 64, "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 1,
                                 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12,
                                 "moe_intermediate_size": 40, "num_local_experts": 4, "num_experts_per_tok": 2,
                                 "shared_expert_intermediate_size": 40, "max_position_embeddings": 256},
                 "code_predictor_config": {"vocab_size": 64, "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 1,
                                           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12,
                                           "num_code_groups": 4, "max_position_embeddings": 256},
                 "num_code_groups": 4, "thinker_hidden_size": 64, "accept_hidden_layer": 1, "spatial_merge_size": 2,
             },
             "code2wav_config": {"codebook_size": 64, "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 1,
                                 "num_attention_heads": 4, "num_key_value_heads": 4, "num_quantizers": 4, "decoder_dim": 32,
                                 "max_position_embeddings": 256},
         }),
    dict(name="kimi-k25", arch="KimiK25ForConditionalGeneration", hf_class="Kimi_K25ForConditionalGeneration",
         model_type="kimi_k25"),
    # vLLM-Ascend's pooling list (Bert, XLM-RoBERTa-based)
    dict(name="bert", arch="BertModel", model_type="bert"),
    # vLLM 0.33.0 reads config.position_embedding_type for XLMRobertaModel (model_executor/models/config.py ::
    # JinaRobertaModelConfig, no getattr default); transformers 5's XLMRobertaConfig dropped the field; transformers
    # 4's had it (default "absolute") and wrote it into every config it saved, as the published XLM-R configs are
    dict(name="xlm-roberta", arch="XLMRobertaModel", model_type="xlm-roberta",
         set={"position_embedding_type": "absolute"}),
    dict(name="xlm-roberta-seqcls", arch="XLMRobertaForSequenceClassification", model_type="xlm-roberta",
         set={"position_embedding_type": "absolute"}),
    dict(name="bert-seqcls", arch="BertForSequenceClassification", model_type="bert"),
    # vLLM 0.33.0 does not register Qwen2ForSequenceClassification by name: the suffix makes convert_type
    # "classify" and the registry normalizes it to Qwen2ForCausalLM, wrapped by adapters.as_seq_cls_model
    # (as Qwen3ForSequenceClassification, qwen3-seqcls)
    dict(name="qwen2-seqcls", arch="Qwen2ForSequenceClassification", model_type="qwen2"),
    # vLLM-Ascend's audio rows. The compiler shrinks only text_config / *vision* / *audio* sub-configs: Cohere ASR's
    # encoder_config (a Parakeet encoder, 48 layers x 1280 by default) is shrunk here by hand
    dict(name="cohere-asr", arch="CohereAsrForConditionalGeneration", model_type="cohere_asr",
         set={"encoder_config.hidden_size": 80, "encoder_config.num_hidden_layers": 2,
              "encoder_config.num_attention_heads": 4, "encoder_config.num_key_value_heads": 4,
              "encoder_config.intermediate_size": 112, "encoder_config.subsampling_conv_channels": 16}),
    # the audio tower's output (proj2, audio_config.output_dim) is what the text model embeds, so it is the text
    # model's hidden size (transformers' defaults, 3584 and 2048, disagree)
    dict(name="qwen3-asr", arch="Qwen3ASRForConditionalGeneration", model_type="qwen3_asr",
         set={"audio_config.output_dim": "@text_config.hidden_size", "audio_config.downsample_hidden_size": 16}),
    # DeepSeek V3.2 from its published config (index_topk 2048: the DSA indexer), as glm-moe-dsa
    dict(name="deepseek-v32", arch="DeepseekV32ForCausalLM",
         config="../shared/corpus/configs/deepseek-ai--DeepSeek-V3.2/config.json"),
    # MiniMax-M3's sizes the compiler's tables do not name, shrunk as the published config relates them
    # (projector_hidden_size = text hidden_size 6144; shared_intermediate_size = intermediate_size 3072).
    # vLLM 0.33.0's vision tower reads vision_config.img_token_compression_config (a dict: spatial_merge_size,
    # temporal_patch_size; minimax_m3/common/vision_tower.py), which transformers 5's MiniMaxM3VLVisionConfig
    # keeps flat (the first run: AttributeError): the same two values, 2 and 2, under the key vLLM reads.
    # text_config.hidden_act: the checkpoint declares "swigluoai" (transformers' own comment in
    # MiniMaxM3VLTextConfig.__post_init__, which rewrites it to "silu" on save) and vLLM 0.33.0 reads the
    # config with its own MiniMaxM3Config, whose MLP raises for anything else (the second run: "Unsupported
    # activation: silu. Only swigluoai is supported."): written back after transformers saves.
    # Dense and MoE layers: the published config has moe_layer_freq (first 3 dense, then MoE), which vLLM's
    # MiniMaxM3Config reads (default [0] * 3 + [1] * 57) and transformers turns into mlp_layer_types without
    # writing it back; the fourth run, without it, had vLLM build both tiny layers dense while transformers
    # wrote both as MoE (every expert never loaded): one dense layer and one MoE layer, said to both
    dict(name="minimax-m3", arch="MiniMaxM3SparseForConditionalGeneration", model_type="minimax_m3_vl",
         set={"projector_hidden_size": "@text_config.hidden_size", "text_config.dense_intermediate_size": 160,
              "text_config.shared_intermediate_size": "@text_config.intermediate_size", "text_config.index_head_dim": 32,
              "vision_config.img_token_compression_config": {"spatial_merge_size": 2, "temporal_patch_size": 2},
              "text_config.mlp_layer_types": ["dense", "sparse"]},
         post_write=lambda out: (config_set("text_config.hidden_act", "swigluoai")(out),
                                 config_set("text_config.moe_layer_freq", [0, 1])(out), minimax_mlp_names(out))),
    dict(name="paddleocr-vl", arch="PaddleOCRVLForConditionalGeneration"),
    dict(name="glm-ocr", arch="GlmOcrForConditionalGeneration"),
    dict(name="granite-speech", arch="GraniteSpeechForConditionalGeneration"),
    dict(name="audioflamingo3", arch="AudioFlamingo3ForConditionalGeneration"),
    dict(name="ernie4_5-vl-moe", arch="Ernie4_5_VLMoeForConditionalGeneration"),
    # vLLM's hy_v3.py (HYV3DecoderLayer: `if not hasattr(config, "first_k_dense_replace"): raise`) reads
    # first_k_dense_replace; transformers 5's HYV3Config says the same with mlp_layer_types (default: the first
    # layer "dense", the rest "sparse"): first_k_dense_replace 1, the tiny checkpoint's one dense layer
    dict(name="hy-v3", arch="HYV3ForCausalLM", set={"first_k_dense_replace": 1}),
    dict(name="laguna", arch="LagunaForCausalLM"),
    dict(name="hyperclovax", arch="HyperCLOVAXForCausalLM"),
    # pooling / classification variants of verified decoders, written as the published ones are: embedding
    # checkpoints are the base model transformers' XModel saves, without the `model.` prefix
    # (intfloat/e5-mistral-7b-instruct: MistralModel, `embed_tokens.weight`, `layers.N...`)
    dict(name="llama-embed", arch="LlamaModel", hf_class="LlamaModel", model_type="llama"),
    dict(name="mistral-embed", arch="MistralModel", hf_class="MistralModel", model_type="mistral"),
    dict(name="gemma2-embed", arch="Gemma2Model", hf_class="Gemma2Model", model_type="gemma2"),
    dict(name="gemma3-text-embed", arch="Gemma3TextModel", hf_class="Gemma3TextModel", model_type="gemma3_text"),
    dict(name="gpt2-seqcls", arch="GPT2ForSequenceClassification", model_type="gpt2", set={"activation_function": "gelu"}),
    # Llama 4's text model alone (model_type llama4_text; fused experts as the published Llama 4 checkpoints hold them)
    dict(name="llama4-text", arch="Llama4ForCausalLM", model_type="llama4_text"),
    # more text decoders vLLM 0.33.0 registers and transformers 5.20.2 has a class for
    # vLLM's linear-attention output gate asserts an explicit output_gate_type ("unsupported output_gate_type=None");
    # transformers 5's Qwen4ExpTextConfig documents "if unset, hidden_act is used" (silu): set to what transformers
    # uses (an activation, not a weight)
    dict(name="qwen4-exp", arch="Qwen4ExpForCausalLM", model_type="qwen4_exp_text", set={"output_gate_type": "silu"}),
    dict(name="mimo-v2-flash", arch="MiMoV2FlashForCausalLM"),
    dict(name="hy-v4", arch="HYV4ForCausalLM"),
]


def _specs():
    out = []
    for s in _RAW:
        s = dict(s)
        if not s.get("model_type") and not s.get("config"):
            s["model_type"] = _model_type_of(s.get("hf_class") or s["arch"])
        out.append(s)
    return out


SPECS = _specs()
