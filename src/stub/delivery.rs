//! The serve-validation kit (two-stage `vllm serve` scripts, feature variants, the smoke test) and the
//! delivery skeletons (accuracy-CI YAML, tutorial, index entry, analysis report and runbook).

use super::{flat, one_line, sh_quote, Context, Lang, Layout};
use crate::plan::Target;
use serde_json::json;
use std::fmt::Write;

/// One feature of the adaptation checklist and whether it applies to this checkpoint.
pub struct Feature {
    pub key: &'static str,
    pub name: &'static str,
    pub name_zh: &'static str,
    /// `applicable` (to verify), `not-applicable` or `checkpoint-missing`.
    pub status: &'static str,
    pub reason: String,
    pub reason_zh: String,
    /// Extra `vllm serve` arguments of its variant (none: no variant of its own).
    pub args: String,
    /// Environment its variant sets.
    pub env: Vec<(String, String)>,
}

pub fn features(ctx: &Context<'_>) -> Vec<Feature> {
    let moe = ctx.is_moe();
    let vl = ctx.is_vl();
    let ascend = ctx.opts.target == Target::VllmAscend;
    let mut f = Vec::new();
    if ascend {
        f.push(Feature {
            key: "aclgraph",
            name: "ACLGraph (graph mode, default)",
            name_zh: "ACLGraph（图模式，默认）",
            status: "applicable",
            reason: "the default graph runtime on vLLM-Ascend; the stage scripts run it unless a fallback is chosen"
                .into(),
            reason_zh: "vLLM-Ascend 默认的图模式运行时；除非选择回退方案，阶段脚本都以此运行".into(),
            args: String::new(),
            env: Vec::new(),
        });
    } else {
        f.push(Feature {
            key: "cudagraph",
            name: "CUDA graphs (torch.compile, default)",
            name_zh: "CUDA Graph（torch.compile，默认）",
            status: "applicable",
            reason: "vLLM's default on GPUs; the stage scripts run it unless a fallback is chosen".into(),
            reason_zh: "vLLM 在 GPU 上的默认模式；除非选择回退方案，阶段脚本都以此运行".into(),
            args: String::new(),
            env: Vec::new(),
        });
    }
    f.push(ep_feature(ctx));
    if ascend {
        f.push(Feature {
            key: "flashcomm1",
            name: "FlashComm1",
            name_zh: "FlashComm1",
            status: if moe { "applicable" } else { "not-applicable" },
            reason: if moe {
                "MoE model; deprecated in recent vllm-ascend in favour of upstream sequence parallelism (check the version)"
                    .into()
            } else {
                "MoE only".into()
            },
            reason_zh: if moe {
                "MoE 模型；较新的 vllm-ascend 已弃用，改用上游的序列并行（请核对版本）".into()
            } else {
                "仅适用于 MoE 模型".into()
            },
            args: "--additional-config '{\"enable_flashcomm1\": true}'".into(),
            env: Vec::new(),
        });
    }
    let (mtp_status, mtp_reason, mtp_reason_zh) = match (ctx.mtp_declared, ctx.mtp_present) {
        (true, true) | (false, true) if ctx.dequant_at_load => (
            "not-applicable",
            "fp8 is dequantized at load by the adapter's load_weights, which only the main model runs: vLLM builds the MTP draft model (DeepSeekMTP and the like) separately with its own loader, which would get the raw fp8 weights and scales with quantization_config null. Unverified, so not offered; for MTP, serve a bf16 copy (`ckptpilot dequant`, then `ckptpilot stub` the copy)".to_string(),
            "fp8 权重在加载时由适配代码的 `load_weights` 反量化，而它只作用于主模型：vLLM 会单独构建 MTP 草稿模型（如 `DeepSeekMTP`），其加载器拿到的是原始 fp8 权重与缩放因子，且 `quantization_config` 为 `null`。该路径未经验证，因此不提供此变体；如需 MTP，请先用 `ckptpilot dequant` 转换为 bf16 副本，再对副本运行 `ckptpilot stub`".to_string(),
        ),
        (true, true) => (
            "applicable",
            "the config declares MTP layers and the checkpoint has their weights".to_string(),
            "配置声明了 MTP 层，且检查点包含其权重".to_string(),
        ),
        (true, false) => (
            "checkpoint-missing",
            "the config declares MTP layers but the checkpoint has no MTP weights (vLLM: `MTP speculative decoding layer … weights missing`)".to_string(),
            "配置声明了 MTP 层，但检查点没有 MTP 权重（vLLM 报错：`MTP speculative decoding layer … weights missing`）".to_string(),
        ),
        (false, true) => (
            "applicable",
            "MTP weights are present though the config does not declare them".to_string(),
            "检查点包含 MTP 权重，但配置未声明".to_string(),
        ),
        (false, false) => ("not-applicable", "no MTP layers".to_string(), "没有 MTP 层".to_string()),
    };
    f.push(Feature {
        key: "mtp",
        name: "MTP (--speculative-config, method mtp)",
        name_zh: "MTP 投机解码（`--speculative-config`，method 设为 mtp）",
        status: mtp_status,
        reason: mtp_reason,
        reason_zh: mtp_reason_zh,
        args: "--speculative-config '{\"method\": \"mtp\", \"num_speculative_tokens\": 1}'".into(),
        env: Vec::new(),
    });
    f.push(Feature {
        key: "multimodal",
        name: "Multimodal (text + image)",
        name_zh: "多模态（文本 + 图像）",
        status: if vl { "applicable" } else { "not-applicable" },
        reason: if vl {
            "vision-language model: smoke.py --vl sends a text + image request".into()
        } else {
            "text-only model".into()
        },
        reason_zh: if vl {
            "视觉语言模型：smoke.py --vl 会发送图文请求".into()
        } else {
            "纯文本模型".into()
        },
        args: String::new(),
        env: Vec::new(),
    });
    f.push(isolated_feature(ctx));
    f
}

/// Expert parallelism: an MoE model whose EP size (TP × DP; DP is 1 here) is above 1, at a TP
/// where plan finds EP feasible. When the stage scripts already run with EP there is no variant.
fn ep_feature(ctx: &Context<'_>) -> Feature {
    let ep_size = ctx.tp; // × DP, which the kit leaves at 1
    let with_ep = ctx.plan.configs.iter().find(|c| c.tp == ctx.tp && c.ep);
    let (status, reason, reason_zh, args) = if !ctx.is_moe() {
        (
            "not-applicable",
            "dense model: vLLM refuses EP without experts".to_string(),
            "稠密模型：没有专家时 vLLM 拒绝开启 EP".to_string(),
            "",
        )
    } else if ep_size <= 1 {
        (
            "not-applicable",
            format!("the EP size is TP × DP = {ep_size}: one rank holds every expert, so --enable-expert-parallel changes nothing"),
            format!("EP 规模为 TP × DP = {ep_size}：单卡持有全部专家，`--enable-expert-parallel` 不起作用"),
            "",
        )
    } else if ctx.ep {
        (
            "applicable",
            format!("MoE model: the stage scripts already run with EP (EP size {ep_size} = TP × DP)"),
            format!("MoE 模型：阶段脚本已开启 EP（EP 规模 {ep_size} = TP × DP）"),
            "",
        )
    } else if let Some(c) = with_ep.filter(|c| !c.feasible) {
        let why = c.failures.iter().map(|f| format!("{}: {}", f.rule, flat(&f.message))).collect::<Vec<_>>().join("; ");
        (
            "not-applicable",
            format!("`ckptpilot plan` predicts that vLLM fails with EP at TP {}: {why}", ctx.tp),
            format!("`ckptpilot plan` 预测在 TP {} 开启 EP 时 vLLM 会失败：`` {} ``", ctx.tp, why.replace("``", "` `")),
            "",
        )
    } else {
        (
            "applicable",
            format!("MoE model (EP size {ep_size} = TP × DP)"),
            format!("MoE 模型（EP 规模 {ep_size} = TP × DP）"),
            "--enable-expert-parallel",
        )
    };
    Feature {
        key: "ep",
        name: "Expert parallel (--enable-expert-parallel)",
        name_zh: "专家并行（--enable-expert-parallel）",
        status,
        reason,
        reason_zh,
        args: args.into(),
        env: Vec::new(),
    }
}

/// Serving under the distinct architecture name, so vLLM's own class for the architecture stays
/// registered for every other model: the overrides carry `architectures: [alias]`.
fn isolated_feature(ctx: &Context<'_>) -> Feature {
    let arch = &ctx.architecture;
    let alias = &ctx.alias;
    let plugin = ctx.opts.layout == Layout::Plugin;
    let (status, reason, reason_zh) = if ctx.replaces_vllm_class {
        (
            "applicable",
            if plugin {
                format!(
                    "by default the plugin registers the adapter as {arch}, which replaces vLLM's own {arch} for every model of that architecture served from this Python environment; this variant serves it as {alias} (--hf-overrides architectures, {}=0) and leaves vLLM's class in place. Code in vLLM and its platform plugins that keys on the architecture name may behave differently: compare with the default variant",
                    ctx.replace_env()
                )
            } else {
                format!(
                    "changing the {arch} registry entry to the adapter replaces vLLM's own {arch} for every model of that architecture the vLLM tree serves; this variant serves it as {alias} (--hf-overrides architectures; add the {alias} entry of REGISTRY.md) and leaves vLLM's class in place. Code in vLLM and its platform plugins that keys on the architecture name may behave differently: compare with the default variant"
                )
            },
            if plugin {
                format!(
                    "默认情况下插件以 `{arch}` 注册适配代码，在此 Python 环境中该架构的所有模型都会改用适配代码，而不再使用 vLLM 自带的 `{arch}`；此变体以 `{alias}` 名义服务（通过 `--hf-overrides` 指定 `architectures`，并设置 `{}=0`），vLLM 自带的类保持不变。vLLM 及其平台插件中按架构名判断的代码可能因此表现不同，请与默认变体对比",
                    ctx.replace_env()
                )
            } else {
                format!(
                    "若将注册表中 `{arch}` 的条目改为适配代码，该 vLLM 源码树服务的该架构所有模型都会改用适配代码；此变体以 `{alias}` 名义服务（通过 `--hf-overrides` 指定 `architectures`；需按 `REGISTRY.md` 添加 `{alias}` 注册项），vLLM 自带的类保持不变。vLLM 及其平台插件中按架构名判断的代码可能因此表现不同，请与默认变体对比"
                )
            },
        )
    } else {
        (
            "not-applicable",
            format!(
                "vLLM {} has no class of its own for {arch}: registering the adapter replaces nothing",
                crate::target::VLLM_REFERENCE
            ),
            format!("vLLM {} 没有 `{arch}` 的自带实现：注册适配代码不会替换任何类", crate::target::VLLM_REFERENCE),
        )
    };
    Feature {
        key: "isolated",
        name: "Distinct architecture name (vLLM's own class untouched)",
        name_zh: "独立架构名（不替换 vLLM 自带的类）",
        status,
        reason,
        reason_zh,
        args: if ctx.replaces_vllm_class {
            format!("--hf-overrides '{}'", hf_overrides(ctx, true).unwrap_or_default())
        } else {
            String::new()
        },
        env: if ctx.replaces_vllm_class && plugin { vec![(ctx.replace_env(), "0".into())] } else { Vec::new() },
    }
}

/// The `--hf-overrides` object the scripts pass, if any: the architecture when the config names it
/// only in `text_config` (vLLM reads the top-level `architectures`; without it vLLM builds another
/// model and never the adapter), or the distinct name with `alias` (the `isolated` variant), and no
/// quantization when the adapter dequantizes fp8 at load. One object: a second `--hf-overrides`
/// would replace the first.
fn hf_overrides(ctx: &Context<'_>, alias: bool) -> Option<String> {
    let mut m = serde_json::Map::new();
    if alias {
        m.insert("architectures".into(), json!([ctx.alias]));
    } else if ctx.architecture_in_text_config_only {
        m.insert("architectures".into(), json!([ctx.architecture]));
    }
    if ctx.dequant_at_load {
        m.insert("quantization_config".into(), serde_json::Value::Null);
    }
    if m.is_empty() {
        return None;
    }
    // serde_json's compact form, with a space after `:` and `,` as vLLM's docs write it.
    let text = serde_json::to_string(&serde_json::Value::Object(m)).unwrap_or_default();
    Some(text.replace("\":", "\": ").replace(",\"", ", \""))
}

/// `--quantization` for checkpoints whose quantization vLLM does not name from config.json: a
/// ModelSlim checkpoint is `ascend` (vllm_ascend/quantization/modelslim_config.py), which only
/// vLLM-Ascend has — never written into a `--target vllm` kit.
fn quantization_arg(ctx: &Context<'_>) -> Option<&'static str> {
    if ctx.opts.target != Target::VllmAscend {
        return None;
    }
    ctx.quant.as_ref().filter(|q| q.modelslim.is_some()).map(|_| "ascend")
}

/// The `vllm serve` arguments every stage and the tutorial share.
fn serve_args(ctx: &Context<'_>) -> String {
    let mut a =
        format!("--tensor-parallel-size {} --max-model-len {} --max-num-seqs 16", ctx.tp, ctx.plan.max_model_len);
    if ctx.ep {
        a.push_str(" --enable-expert-parallel");
    }
    if let Some(q) = quantization_arg(ctx) {
        let _ = write!(a, " --quantization {q}");
    }
    if let Some(o) = hf_overrides(ctx, false) {
        let _ = write!(a, " --hf-overrides '{o}'");
    }
    if let Some(r) = ctx.ck.source.remote.as_deref() {
        let _ = write!(a, " --revision {}", r.commit);
    }
    a
}

/// Why `--max-model-len` is what it is, when the model's own limit is below the 128k baseline.
fn max_len_note(ctx: &Context<'_>) -> Option<String> {
    let (d, key) = ctx.ck.config.as_ref()?.derived_max_model_len?;
    (ctx.plan.max_model_len == d && d < crate::plan::BASELINE_MAX_MODEL_LEN).then(|| {
        format!(
            "--max-model-len {d}: the model's own limit (vLLM derives it from {key}); vLLM refuses more (\"User-specified max_model_len ({}) is greater than the derived max_model_len …\"). For a longer context, raise it with --hf-overrides and a rope_scaling the model supports, or set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1, and change the value here.",
            crate::plan::BASELINE_MAX_MODEL_LEN
        )
    })
}

/// The default `MODEL` of the scripts: the repo id for a checkpoint read from the Hub, else
/// `/models/<name>` (the name defaults to the checkpoint directory's).
fn default_model(ctx: &Context<'_>) -> String {
    match ctx.ck.source.remote.as_deref() {
        Some(r) => r.repo.clone(),
        None => format!("/models/{}", ctx.name),
    }
}

/// What `ckptpilot plan` predicts at the kit's configuration when it is infeasible (`--allow-infeasible`),
/// on one line: with `full` every failure with vLLM's message, else only the rules. In English, or
/// (`zh`) in Chinese with the messages quoted as code. `None` when feasible.
pub fn predicted_failure(ctx: &Context<'_>, zh: bool, full: bool) -> Option<String> {
    if ctx.failures.is_empty() {
        return None;
    }
    let t = ctx.opts.target.as_str();
    let dev = &ctx.plan.device.name;
    let rules = ctx.failures.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>().join(", ");
    let why: Vec<String> = ctx.failures.iter().map(|f| format!("{}: {}", f.rule, flat(&f.message))).collect();
    Some(if zh {
        let alt = match ctx.feasible {
            Some((tp, ep)) => format!("规划认为 TP {tp}{} 可行", if ep { "（开启 EP）" } else { "" }),
            None => format!("规划认为在 {dev} 上没有任何可行的 TP（至 32）"),
        };
        let head = format!(
            "`ckptpilot plan --target {t}` 预测 vLLM {} 在 {dev} 上以 {} 运行会失败（{rules}；因指定了 `--allow-infeasible` 仍生成本套件）；{alt}",
            crate::target::VLLM_REFERENCE,
            ctx.layout_zh(),
        );
        if full {
            format!(
                "{head}。预测的错误：{}",
                why.iter().map(|w| format!("`` {} ``", w.replace("``", "` `"))).collect::<Vec<_>>().join("；")
            )
        } else {
            head
        }
    } else {
        let alt = match ctx.feasible {
            Some((tp, ep)) => format!("plan finds TP {tp}{} feasible", if ep { " with EP" } else { "" }),
            None => format!("plan finds no feasible TP up to 32 on {dev}"),
        };
        let head = format!(
            "`ckptpilot plan --target {t}` predicts that vLLM {} fails at {} on {dev} ({rules}; written with --allow-infeasible); {alt}",
            crate::target::VLLM_REFERENCE,
            ctx.layout_en(),
        );
        if full {
            format!("{head}. Predicted: {}", why.join("; "))
        } else {
            head
        }
    })
}

fn serve_script(ctx: &Context<'_>, stage: char) -> String {
    let dummy = stage == 'A';
    let feats = features(ctx);
    let variants: Vec<&Feature> = feats.iter().filter(|f| f.status == "applicable" && !f.args.is_empty()).collect();
    let mut o = String::new();
    let _ = writeln!(o, "#!/usr/bin/env bash");
    let _ = writeln!(
        o,
        "# Stage {stage} of the serve validation for {} ({}) on {}: {}.\n# Generated by ckptpilot (rules of vLLM {}). TP/EP: {}.",
        ctx.name,
        ctx.architecture,
        ctx.opts.target.as_str(),
        if dummy { "dummy weights (--load-format dummy): architecture, operators and API path" } else { "real weights: key mapping, fp8 dequant, sharding with real shapes" },
        crate::target::VLLM_REFERENCE,
        one_line(&ctx.tp_reason)
    );
    if let Some(w) = predicted_failure(ctx, false, true) {
        let _ = writeln!(o, "# WARNING: {w}");
    }
    if let Some(n) = max_len_note(ctx) {
        let _ = writeln!(o, "# {n}");
    }
    if ctx.architecture_in_text_config_only {
        let _ = writeln!(
            o,
            "# config.json names {} only in text_config.architectures: --hf-overrides gives vLLM the architecture, so it builds the adapter.",
            ctx.architecture
        );
    }
    if ctx.dequant_at_load {
        o.push_str("# fp8 checkpoint on a target without fp8: the adapter dequantizes at load, so the model is built unquantized (quantization_config: null).\n");
    }
    if ctx.replaces_vllm_class && ctx.opts.layout == super::Layout::Plugin {
        let _ = writeln!(
            o,
            "# The plugin registers the adapter as {arch}: every {arch} model served from this Python environment gets it instead of vLLM's own class. The `isolated` variant serves it as {} and leaves vLLM's class in place.",
            ctx.alias,
            arch = ctx.architecture
        );
    }
    let _ = writeln!(
        o,
        "# Environment: WORKSPACE (default /workspace) is the directory vllm serve runs in; MODEL (default {}) the checkpoint {}; PORT (default 8000).",
        default_model(ctx),
        if ctx.ck.source.remote.is_some() { "(a Hub repo id, or a local copy of it)" } else { "directory (or a Hub repo id)" }
    );
    o.push_str("# Usage: serve_stage_X.sh [variant]   variants: default");
    for f in &variants {
        let _ = write!(o, ", {}", f.key);
    }
    o.push_str(", eager, no-dynamo, text-only\n");
    for f in feats.iter().filter(|f| f.status != "applicable") {
        let _ = writeln!(o, "#   {}: {} ({})", f.key, f.status, one_line(&f.reason));
    }
    o.push_str("set -euo pipefail\n");
    if let Some(w) = predicted_failure(ctx, false, false) {
        let _ = writeln!(o, "echo {} >&2", sh_quote(&format!("warning: {w}")));
    }
    o.push_str("WORKSPACE=\"${WORKSPACE:-/workspace}\"\n");
    let _ = writeln!(o, "MODEL=\"${{MODEL:-{}}}\"", default_model(ctx));
    o.push_str("PORT=\"${PORT:-8000}\"\nVARIANT=\"${1:-default}\"\ncd \"$WORKSPACE\"\n");
    let _ = writeln!(
        o,
        "ARGS=(--tensor-parallel-size {} --max-model-len {} --max-num-seqs 16 --port \"$PORT\"{}{})",
        ctx.tp,
        ctx.plan.max_model_len,
        if ctx.ep { " --enable-expert-parallel" } else { "" },
        if dummy { " --load-format dummy" } else { "" }
    );
    if let Some(q) = quantization_arg(ctx) {
        let _ = writeln!(o, "ARGS+=(--quantization {q})   # ModelSlim checkpoint (quant_model_description.json)");
    }
    if let Some(r) = ctx.ck.source.remote.as_deref() {
        let _ = writeln!(o, "ARGS+=(--revision {})   # the commit ckptpilot read from the Hub", r.commit);
    }
    o.push_str("case \"$VARIANT\" in\n  default) ;;\n");
    for f in &variants {
        let env: String = f.env.iter().map(|(k, v)| format!("export {k}={v}; ")).collect();
        let _ = writeln!(o, "  {}) {env}ARGS+=({}) ;;", f.key, f.args);
    }
    o.push_str("  # Fallback ladder, in order:\n");
    o.push_str("  eager) ARGS+=(--enforce-eager) ;;\n");
    o.push_str("  no-dynamo) export TORCHDYNAMO_DISABLE=1; ARGS+=(--enforce-eager) ;;   # VL interpolate failures\n");
    if ctx.is_vl() {
        o.push_str("  text-only) ARGS+=(--limit-mm-per-prompt '{\"image\": 0, \"video\": 0, \"audio\": 0}') ;;\n");
    } else {
        o.push_str("  text-only) ;;   # text-only model already\n");
    }
    o.push_str("  *) echo \"unknown variant: $VARIANT\" >&2; exit 2 ;;\nesac\n");
    if let Some(ov) = hf_overrides(ctx, false) {
        if variants.iter().any(|f| f.key == "isolated") {
            // The `isolated` variant passes its own object (one --hf-overrides: a second replaces the first).
            let _ = writeln!(o, "if [ \"$VARIANT\" != isolated ]; then ARGS+=(--hf-overrides '{ov}'); fi");
        } else {
            let _ = writeln!(o, "ARGS+=(--hf-overrides '{ov}')");
        }
    }
    o.push_str("exec vllm serve \"$MODEL\" \"${ARGS[@]}\"\n");
    o
}

/// The accuracy-CI `hardware`: the plan's device — an NVIDIA GPU for vLLM, an Atlas series for
/// vLLM-Ascend (A3 for an A3 device, or beyond the 8 NPUs of an A2 node).
fn hardware(ctx: &Context<'_>) -> String {
    let d = &ctx.plan.device;
    match ctx.opts.target {
        Target::VllmAscend => {
            if d.name.starts_with("ascend-a3") || ctx.tp > 8 { "Atlas A3 Series" } else { "Atlas A2 Series" }.into()
        }
        Target::Vllm => {
            let n = d.description.split(" (").next().unwrap_or(&d.name).trim();
            if n.starts_with("NVIDIA") {
                n.to_string()
            } else {
                format!("NVIDIA GPU ({n})")
            }
        }
    }
}

fn yaml(ctx: &Context<'_>) -> String {
    let vl = ctx.is_vl();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Accuracy CI config for vllm-ascend (tests/e2e/models/configs). Generated by ckptpilot; fill the metric values"
    );
    let _ = writeln!(o, "# from a real evaluation run (lm-eval), then remove the TODO markers.");
    let _ = writeln!(o, "model_name: \"{}\"", ctx.name);
    let _ = writeln!(o, "model_type: \"{}\"", if vl { "vllm-vlm" } else { "vllm" });
    let _ = writeln!(o, "hardware: \"{}\"", hardware(ctx));
    o.push_str("serve:\n");
    let _ = writeln!(o, "  tensor_parallel_size: {}", ctx.tp);
    let _ = writeln!(o, "  max_model_len: {}", ctx.plan.max_model_len.min(4096));
    if let Some(ov) = hf_overrides(ctx, false) {
        let _ = writeln!(o, "  # the serve scripts pass --hf-overrides '{ov}'");
    }
    o.push_str("  dtype: auto\n  gpu_memory_utilization: 0.9\n  trust_remote_code: false\n");
    if ctx.is_moe() {
        let _ = writeln!(o, "  enable_expert_parallel: {}", ctx.ep);
    }
    o.push_str("tasks:\n");
    if vl {
        o.push_str(
            "- name: \"mmmu_val\"\n  metrics:\n  - name: \"acc,none\"\n    value: null  # TODO: from evaluation\n",
        );
    } else {
        o.push_str("- name: \"gsm8k\"\n  metrics:\n  - name: \"exact_match,strict-match\"\n    value: null  # TODO: from evaluation\n  - name: \"exact_match,flexible-extract\"\n    value: null  # TODO: from evaluation\n");
    }
    o.push_str("num_fewshot: 5\napply_chat_template: false\nfewshot_as_multiturn: false\nbatch_size: \"auto\"\n");
    o
}

/// The model facts for the tutorial and the report, in the report's language.
fn facts(ctx: &Context<'_>, zh: bool) -> Vec<(String, String)> {
    let t = |zh_text: &str, en: &str| if zh { zh_text.to_string() } else { en.to_string() };
    let cfg = ctx.ck.config.clone().unwrap_or_default();
    let matched = |m: &str| match (zh, m) {
        (true, "architecture") => "按架构名匹配".to_string(),
        (true, "inferred") => "按张量名推断".to_string(),
        (true, other) => format!("匹配方式 {other}"),
        (false, other) => other.to_string(),
    };
    let mut v = vec![
        (t("架构", "architecture"), ctx.architecture.clone()),
        (
            t("模型族", "family"),
            ctx.remap.family.as_ref().map_or("-".into(), |f| format!("{} ({})", f.family, matched(f.matched_by))),
        ),
        (t("层数", "layers"), cfg.num_layers.map_or("?".into(), |n| n.to_string())),
        (
            t("注意力头 / KV 头", "heads / kv heads"),
            format!("{} / {}", cfg.num_heads.unwrap_or(0), cfg.num_kv_heads.unwrap_or(0)),
        ),
        (
            t("注意力类型", "attention"),
            if cfg.mla.is_some() {
                "MLA".into()
            } else if cfg.linear_attention.is_some() {
                t("线性注意力与全注意力混合", "hybrid linear / full")
            } else {
                "GQA".into()
            },
        ),
        (
            "MoE".into(),
            cfg.moe.as_ref().map_or(t("否", "no"), |m| {
                if zh {
                    format!("{} 个专家", m.num_experts)
                } else {
                    format!("{} experts", m.num_experts)
                }
            }),
        ),
        (
            "MTP".into(),
            if zh {
                format!("声明 {} 层，权重{}", cfg.mtp_layers, if ctx.mtp_present { "存在" } else { "缺失" })
            } else {
                format!("declared {}, weights {}", cfg.mtp_layers, if ctx.mtp_present { "present" } else { "absent" })
            },
        ),
        (t("视觉", "vision"), if cfg.has_vision { t("是", "yes") } else { t("否", "no") }),
        (
            t("量化", "quantization"),
            ctx.quant.as_ref().map_or(t("无", "none"), |q| {
                let schemes = q.modelslim.as_ref().map_or(String::new(), |d| {
                    format!(
                        " ({}{}; {})",
                        t("model_quant_type ", "model_quant_type "),
                        d.model_quant_type.as_deref().unwrap_or("-"),
                        d.weight_schemes()
                    )
                });
                if zh {
                    format!("`{}`{schemes}", q.method)
                } else {
                    format!("{}{schemes}", q.method)
                }
            }),
        ),
        (t("张量数", "tensors"), ctx.ck.tensor_count().to_string()),
        ("TP / EP".into(), format!("{} / {}", ctx.tp, if ctx.ep { t("开启", "on") } else { t("关闭", "off") })),
        (
            t("最大上下文长度（--max-model-len）", "max model length (--max-model-len)"),
            ctx.plan.max_model_len.to_string(),
        ),
        (
            t("目标平台", "target"),
            if zh {
                format!("`{}`（{}）", ctx.opts.target.as_str(), hardware(ctx))
            } else {
                format!("{} ({})", ctx.opts.target.as_str(), hardware(ctx))
            },
        ),
    ];
    if ctx.dequant_at_load {
        v.push((
            "fp8".into(),
            t(
                "加载时由适配代码反量化为 bf16（或先用 `ckptpilot dequant` 离线转换）",
                "dequantized to bf16 at load (adapter) or offline with `ckptpilot dequant`",
            ),
        ));
    }
    v
}

fn tutorial(ctx: &Context<'_>) -> String {
    let ascend = ctx.opts.target == Target::VllmAscend;
    let mut o = String::new();
    let _ = writeln!(o, "# {}\n", ctx.name);
    o.push_str("## Introduction\n\n");
    let _ = writeln!(
        o,
        "{} ({}) on {}. This page was generated by ckptpilot from the checkpoint; complete the TODOs.\n",
        ctx.name,
        ctx.architecture,
        if ascend { "vLLM-Ascend" } else { "vLLM" }
    );
    o.push_str("| property | value |\n|---|---|\n");
    for (k, v) in facts(ctx, false) {
        let _ = writeln!(o, "| {k} | {} |", one_line(&v));
    }
    o.push_str("\n## Supported Features\n\n| feature | status | note |\n|---|---|---|\n");
    for f in features(ctx) {
        let status = if f.status == "applicable" { "to verify" } else { f.status };
        let _ = writeln!(o, "| {} | {status} | {} |", f.name, one_line(&f.reason));
    }
    o.push_str("\n## Environment Preparation\n\n");
    let _ = writeln!(
        o,
        "- The model at `{}` (the serve scripts read `MODEL`); they run from `/workspace` (`WORKSPACE`).",
        default_model(ctx)
    );
    let _ = writeln!(o, "- {} {} ({}).", ctx.tp, if ascend { "NPUs" } else { "GPUs" }, hardware(ctx));
    if let Some(w) = predicted_failure(ctx, false, true) {
        let _ = writeln!(o, "\n> **Warning:** {w}");
    }
    o.push_str("\n## Deployment\n\n```bash\n");
    let _ = writeln!(o, "vllm serve {} {} --port 8000", default_model(ctx), serve_args(ctx));
    o.push_str("```\n");
    if let Some(n) = max_len_note(ctx) {
        let _ = writeln!(o, "\n{n}");
    }
    o.push_str("\n## Functional Verification\n\n```bash\npython3 validation/smoke.py --stage B");
    if ctx.is_vl() {
        o.push_str(" --vl");
    }
    let _ = write!(
        o,
        "\n```\n\n## Accuracy Evaluation\n\nTODO: lm-eval results (the numbers for tests/e2e/models/configs).\n\n## Performance\n\nTODO: throughput and latency at the capacity baseline ({} tokens of context, 16 sequences).\n",
        ctx.plan.max_model_len
    );
    o
}

/// A remap action in Chinese.
fn action_zh(a: &str) -> &str {
    match a {
        "load" => "直接加载",
        "stack" => "合并加载",
        "expert" => "专家权重",
        "skip" => "跳过",
        "unmapped" => "未映射",
        "dequantize-then-load" => "反量化后加载",
        other => other,
    }
}

fn status_zh(s: &str) -> &str {
    match s {
        "applicable" => "待验证（支持 / 不支持）",
        "checkpoint-missing" => "检查点缺少权重",
        "not-applicable" => "不适用",
        other => other,
    }
}

fn report(ctx: &Context<'_>) -> String {
    let zh = ctx.opts.lang == Lang::Zh;
    let t = |zh_text: &'static str, en: &'static str| if zh { zh_text } else { en };
    let mut o = String::new();
    let _ = writeln!(o, "# {} {}\n", ctx.name, t("适配分析报告与运行手册", "adaptation report and runbook"));
    let _ = writeln!(
        o,
        "{} ckptpilot {} ({} vLLM {})\n",
        t("生成工具：", "Generated by"),
        env!("CARGO_PKG_VERSION"),
        t("规则版本", "rules of"),
        crate::target::VLLM_REFERENCE
    );
    if let Some(w) = predicted_failure(ctx, zh, true) {
        let _ = writeln!(o, "> **{}** {w}\n", t("警告：", "Warning:"));
    }
    let _ = writeln!(o, "## {}\n", t("1 模型分析", "1 Model analysis"));
    o.push_str(t("| 项目 | 值 |\n|---|---|\n", "| item | value |\n|---|---|\n"));
    for (k, v) in facts(ctx, zh) {
        let _ = writeln!(o, "| {k} | {} |", one_line(&v));
    }
    let _ = writeln!(
        o,
        "\n{} {}\n",
        t("并行配置依据：", "Parallel configuration:"),
        if zh { &ctx.tp_reason_zh } else { &ctx.tp_reason }
    );
    if let Some(n) = max_len_note(ctx) {
        if zh {
            let _ = writeln!(
                o,
                "{} {}\n",
                t("最大上下文长度：", ""),
                format_args!(
                    "模型自身的上限为 {}（vLLM 由配置推导），超过该值 vLLM 会拒绝启动（`User-specified max_model_len ({}) is greater than the derived max_model_len …`）。如需更长上下文，请通过 --hf-overrides 配合模型支持的 rope_scaling 扩展，或设置 VLLM_ALLOW_LONG_MAX_MODEL_LEN=1，并同步修改脚本中的取值。",
                    ctx.plan.max_model_len,
                    crate::plan::BASELINE_MAX_MODEL_LEN
                )
            );
        } else {
            let _ = writeln!(o, "{n}\n");
        }
    }
    let counts: Vec<String> = ctx
        .remap
        .counts
        .iter()
        .map(|(k, v)| if zh { format!("{} {v}", action_zh(k)) } else { format!("{k} {v}") })
        .collect();
    let _ = writeln!(o, "## {}\n", t("2 权重映射", "2 Weight mapping"));
    let _ = writeln!(o, "{} {}", t("映射统计：", "Remap counts:"), counts.join(if zh { "，" } else { ", " }));
    let problems: Vec<_> =
        ctx.remap.findings.iter().filter(|f| f.severity != crate::findings::Severity::Info).collect();
    if problems.is_empty() {
        let _ = writeln!(o, "\n{}", t("反向检查：无问题。", "Reverse check: clean."));
    } else {
        let _ = writeln!(o, "\n{}", t("反向检查发现（诊断信息保留工具输出原文）：", "Reverse check findings:"));
        for f in problems {
            if zh {
                let _ = writeln!(o, "- `{}`：`` {} ``", f.code.as_str(), flat(&f.message).replace("``", "` `"));
            } else {
                let _ = writeln!(o, "- `{}` {}", f.code.as_str(), flat(&f.message));
            }
        }
    }
    let _ = writeln!(o, "\n## {}\n", t("3 特性矩阵", "3 Feature matrix"));
    o.push_str(t("| 特性 | 状态 | 说明 |\n|---|---|---|\n", "| feature | status | note |\n|---|---|---|\n"));
    for f in features(ctx) {
        if zh {
            let _ = writeln!(o, "| {} | {} | {} |", f.name_zh, status_zh(f.status), one_line(&f.reason_zh));
        } else {
            let status = if f.status == "applicable" { "to verify (supported / unsupported)" } else { f.status };
            let _ = writeln!(o, "| {} | {status} | {} |", f.name, one_line(&f.reason));
        }
    }
    let _ = writeln!(o, "\n## {}\n", t("4 Dummy 与真实权重验证证据", "4 Dummy vs real-weight evidence"));
    o.push_str(t(
        "| 阶段 | 命令 | `/v1/models` | 文本请求 | 图文请求 | 证据文件 |\n|---|---|---|---|---|---|\n",
        "| stage | command | /v1/models | text request | text+image request | evidence |\n|---|---|---|---|---|---|\n",
    ));
    for stage in ['A', 'B'] {
        let _ = writeln!(
            o,
            "| {stage} | `validation/serve_stage_{}.sh` | | | {} | `evidence_stage_{stage}.json` |",
            stage.to_ascii_lowercase(),
            if ctx.is_vl() { "" } else { t("不适用", "n/a") }
        );
    }
    let _ = writeln!(o, "\n## {}\n", t("5 运行手册", "5 Runbook"));
    let plugin = ctx.opts.layout == Layout::Plugin;
    let vl = if ctx.is_vl() { " --vl" } else { "" };
    let model = default_model(ctx);
    let mut steps: Vec<String> = Vec::new();
    if zh {
        steps.push(if plugin {
            "在运行 vLLM 的 Python 环境中安装插件：在本套件目录（`pyproject.toml` 所在目录）执行 `pip install -e .`。"
                .into()
        } else {
            "按 `REGISTRY.md` 将适配代码放入 vLLM 源码树并添加注册项。".into()
        });
        if ctx.replaces_vllm_class {
            steps.push(if plugin {
                format!(
                    "注意：插件以 `{arch}` 注册适配代码，因此该 Python 环境中所有 `{arch}` 模型都会改用适配代码，而不再使用 vLLM 自带的类。若要保留 vLLM 自带的类，请使用 `isolated` 变体（以 `{alias}` 名义服务，并设置 `{env}=0`），或在验证后执行 `pip uninstall {dist}`。",
                    arch = ctx.architecture,
                    alias = ctx.alias,
                    env = ctx.replace_env(),
                    dist = ctx.package().replace('_', "-")
                )
            } else {
                format!(
                    "注意：若将注册表中 `{arch}` 的条目改为适配代码，该 vLLM 源码树服务的所有 `{arch}` 模型都会改用适配代码；只添加 `{alias}` 条目并使用 `isolated` 变体，可保留 vLLM 自带的类。",
                    arch = ctx.architecture,
                    alias = ctx.alias
                )
            });
        }
        steps.push(format!(
            "环境变量：`WORKSPACE`（默认 `/workspace`，`vllm serve` 的工作目录）、`MODEL`（默认 `{model}`）、`PORT`（默认 `8000`），例如 `MODEL=/path/to/weights bash validation/serve_stage_b.sh`。"
        ));
        steps.push(format!(
            "阶段 A：`bash validation/serve_stage_a.sh`，另一终端运行 `python3 validation/smoke.py --stage A{vl}`。"
        ));
        steps.push(format!(
            "阶段 B（必须）：`bash validation/serve_stage_b.sh`，再运行 `python3 validation/smoke.py --stage B{vl}`。"
        ));
        steps.push("逐个验证适用特性：`serve_stage_b.sh <variant>`（见特性矩阵）。".into());
        steps.push("失败时依次回退：`eager` → `no-dynamo` → `text-only`。".into());
        steps.push("填写 `tests/e2e/models/configs` 的精度数值与教程中的 TODO。".into());
    } else {
        steps.push(if plugin {
            "Install the plugin into the Python environment that runs vLLM: `pip install -e .` in the kit directory (the one holding `pyproject.toml`).".into()
        } else {
            "Copy the adapter into a vLLM tree and add its registry entry, as REGISTRY.md says.".into()
        });
        if ctx.replaces_vllm_class {
            steps.push(if plugin {
                format!(
                    "Note: the plugin registers the adapter as `{arch}`, so every `{arch}` model served from that Python environment gets the adapter instead of vLLM's own class. To keep vLLM's class, serve with the `isolated` variant (as `{alias}`, `{env}=0`), or `pip uninstall {dist}` after validation.",
                    arch = ctx.architecture,
                    alias = ctx.alias,
                    env = ctx.replace_env(),
                    dist = ctx.package().replace('_', "-")
                )
            } else {
                format!(
                    "Note: changing the `{arch}` registry entry to the adapter gives every `{arch}` model that vLLM tree serves the adapter; adding only the `{alias}` entry and serving with the `isolated` variant keeps vLLM's own class.",
                    arch = ctx.architecture,
                    alias = ctx.alias
                )
            });
        }
        steps.push(format!(
            "Environment: `WORKSPACE` (default `/workspace`, where `vllm serve` runs), `MODEL` (default `{model}`), `PORT` (default 8000); e.g. `MODEL=/path/to/weights bash validation/serve_stage_b.sh`."
        ));
        steps.push(format!(
            "Stage A: `bash validation/serve_stage_a.sh`; in another shell `python3 validation/smoke.py --stage A{vl}`."
        ));
        steps.push(format!(
            "Stage B (mandatory): `bash validation/serve_stage_b.sh`, then `python3 validation/smoke.py --stage B{vl}`."
        ));
        steps.push("Try each applicable feature: `serve_stage_b.sh <variant>` (see the feature matrix).".into());
        steps.push("On failure fall back in order: eager → no-dynamo → text-only.".into());
        steps.push("Fill the accuracy values in tests/e2e/models/configs and the tutorial's TODOs.".into());
    }
    for (i, step) in steps.iter().enumerate() {
        let _ = writeln!(o, "{}. {step}", i + 1);
    }
    o
}

/// The plugin package's README (the kit's language): what it registers, that this replaces vLLM's
/// own class for the architecture in the environment, and how to serve without replacing it.
pub fn plugin_readme(ctx: &Context<'_>) -> String {
    let zh = ctx.opts.lang == Lang::Zh;
    let arch = &ctx.architecture;
    let alias = &ctx.alias;
    let env = ctx.replace_env();
    let pkg = ctx.package();
    let dist = pkg.replace('_', "-");
    let mut o = String::new();
    if zh {
        let _ = writeln!(o, "# {dist}\n");
        let _ = writeln!(
            o,
            "{} 的 vLLM 插件（由 ckptpilot 生成）：通过 `vllm.general_plugins` 入口点注册适配代码 `{}.{}:{}`。\n",
            ctx.name,
            ctx.package(),
            ctx.module,
            ctx.class
        );
        let _ = writeln!(o, "## 安装\n\n```bash\npip install -e .\n```\n");
        if ctx.replaces_vllm_class {
            let _ = writeln!(
                o,
                "## 影响范围\n\n插件以 `{arch}` 注册适配代码：安装后，此 Python 环境中所有 `{arch}` 模型都会改用适配代码，而不再使用 vLLM 自带的类，不仅限于本检查点。\n\n插件同时以 `{alias}` 注册，该名称不会替换任何类。设置 `{env}=0` 并以如下方式服务，可保留 vLLM 自带的 `{arch}`（即服务脚本的 `isolated` 变体）：\n\n```bash\n{env}=0 vllm serve MODEL --hf-overrides '{}'\n```\n\nvLLM 及其平台插件中按架构名判断的代码可能因此表现不同，请与默认方式对比。若 `VLLM_PLUGINS` 未列出 `{pkg}`，vLLM 不会加载本插件。验证结束后可执行 `pip uninstall {dist}` 卸载。\n",
                hf_overrides(ctx, true).unwrap_or_default()
            );
        } else {
            let _ =
                writeln!(o, "vLLM {} 没有 `{arch}` 的自带实现，注册不会替换任何类。\n", crate::target::VLLM_REFERENCE);
        }
        let _ = writeln!(o, "## 验证\n\n见 `validation/` 与 `delivery/report.zh.md`。");
    } else {
        let _ = writeln!(o, "# {dist}\n");
        let _ = writeln!(
            o,
            "vLLM plugin for {} (generated by ckptpilot): its `vllm.general_plugins` entry point registers the adapter `{}.{}:{}`.\n",
            ctx.name,
            ctx.package(),
            ctx.module,
            ctx.class
        );
        let _ = writeln!(o, "## Install\n\n```bash\npip install -e .\n```\n");
        if ctx.replaces_vllm_class {
            let _ = writeln!(
                o,
                "## What it replaces\n\nThe plugin registers the adapter as `{arch}`: once it is installed, every `{arch}` model served from this Python environment gets the adapter instead of vLLM's own class, not only this checkpoint.\n\nIt also registers the adapter as `{alias}`, which replaces nothing. With `{env}=0` and the override below (the `isolated` variant of the serve scripts), vLLM's own `{arch}` stays in place for every other model:\n\n```bash\n{env}=0 vllm serve MODEL --hf-overrides '{}'\n```\n\nCode in vLLM and its platform plugins that keys on the architecture name may behave differently under the distinct name: compare with the default. vLLM loads no plugin that `VLLM_PLUGINS`, when set, does not list (`{pkg}`). `pip uninstall {dist}` removes the plugin after validation.\n",
                hf_overrides(ctx, true).unwrap_or_default()
            );
        } else {
            let _ = writeln!(
                o,
                "vLLM {} has no class of its own for `{arch}`: registering the adapter replaces nothing.\n",
                crate::target::VLLM_REFERENCE
            );
        }
        let _ = writeln!(o, "## Validation\n\nSee `validation/` and `delivery/report.en.md`.");
    }
    o
}

/// The next steps `stub` prints after writing (the kit's language): install, stage A, stage B,
/// with the commands and absolute paths.
pub fn next_steps(ctx: &Context<'_>) -> String {
    let zh = ctx.opts.lang == Lang::Zh;
    let out = std::fs::canonicalize(&ctx.opts.out).unwrap_or_else(|_| ctx.opts.out.clone());
    let p = |rel: &str| sh_quote(&one_line(&out.join(rel).display().to_string()));
    let out_q = sh_quote(&one_line(&out.display().to_string()));
    let model_env = match ctx.ck.source.remote {
        Some(_) => String::new(),
        None => {
            let root = std::fs::canonicalize(&ctx.ck.source.root).unwrap_or_else(|_| ctx.ck.source.root.clone());
            format!("MODEL={} ", sh_quote(&one_line(&root.display().to_string())))
        }
    };
    let vl = if ctx.is_vl() { " --vl" } else { "" };
    let plugin = ctx.opts.layout == Layout::Plugin;
    let report = p(&format!("delivery/report.{}.md", if zh { "zh" } else { "en" }));
    let mut o = String::new();
    if zh {
        let _ = writeln!(o, "下一步（详见 {report}）：");
        if let Some(w) = predicted_failure(ctx, true, false) {
            let _ = writeln!(o, "  警告：{w}");
        }
        if plugin {
            let _ = writeln!(o, "  1. 在运行 vLLM 的 Python 环境中安装插件：\n       pip install -e {out_q}");
        } else {
            let _ = writeln!(o, "  1. 按 {} 将适配代码放入 vLLM 源码树。", p("REGISTRY.md"));
        }
        if ctx.replaces_vllm_class {
            let _ = writeln!(
                o,
                "     注意：适配代码以 {arch} 注册，该环境中所有 {arch} 模型都会改用它，而不再使用 vLLM 自带的类；变体 isolated 以 {} 名义服务，保留 vLLM 自带的类。",
                ctx.alias,
                arch = ctx.architecture
            );
        }
        let _ = writeln!(
            o,
            "  2. 阶段 A（dummy 权重；WORKSPACE 默认 /workspace，MODEL 默认 {}）：\n       {model_env}bash {}\n     另一终端：\n       python3 {} --stage A{vl}",
            default_model(ctx),
            p("validation/serve_stage_a.sh"),
            p("validation/smoke.py")
        );
        let _ = writeln!(
            o,
            "  3. 阶段 B（真实权重）：\n       {model_env}bash {}\n     另一终端：\n       python3 {} --stage B{vl}",
            p("validation/serve_stage_b.sh"),
            p("validation/smoke.py")
        );
    } else {
        let _ = writeln!(o, "Next steps (the runbook: {report}):");
        if let Some(w) = predicted_failure(ctx, false, false) {
            let _ = writeln!(o, "  WARNING: {w}");
        }
        if plugin {
            let _ = writeln!(
                o,
                "  1. Install the plugin into the Python environment that runs vLLM:\n       pip install -e {out_q}"
            );
        } else {
            let _ = writeln!(o, "  1. Copy the adapter into a vLLM tree as {} says.", p("REGISTRY.md"));
        }
        if ctx.replaces_vllm_class {
            let _ = writeln!(
                o,
                "     Note: the adapter is registered as {arch}, so every {arch} model served from that environment gets it instead of vLLM's own class; the variant `isolated` serves it as {} and leaves vLLM's class in place.",
                ctx.alias,
                arch = ctx.architecture
            );
        }
        let _ = writeln!(
            o,
            "  2. Stage A, dummy weights (WORKSPACE defaults to /workspace, MODEL to {}):\n       {model_env}bash {}\n     then, in another shell:\n       python3 {} --stage A{vl}",
            default_model(ctx),
            p("validation/serve_stage_a.sh"),
            p("validation/smoke.py")
        );
        let _ = writeln!(
            o,
            "  3. Stage B, real weights:\n       {model_env}bash {}\n     then, in another shell:\n       python3 {} --stage B{vl}",
            p("validation/serve_stage_b.sh"),
            p("validation/smoke.py")
        );
    }
    o
}

/// Every kit and delivery file, relative to the output directory.
pub fn files(ctx: &Context<'_>) -> Vec<(String, String)> {
    let feats: Vec<serde_json::Value> = features(ctx)
        .iter()
        .map(|f| {
            let env: serde_json::Map<String, serde_json::Value> =
                f.env.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect();
            json!({"feature": f.key, "name": f.name, "status": f.status, "reason": f.reason, "serve_args": f.args, "env": env})
        })
        .collect();
    let failures: Vec<serde_json::Value> =
        ctx.failures.iter().map(|f| json!({"rule": f.rule.as_str(), "message": f.message, "fix": f.fix})).collect();
    let features_json = json!({
        "schema": "ckptpilot.features/1",
        "vllm_reference": crate::target::VLLM_REFERENCE,
        "model": ctx.name,
        "architecture": ctx.architecture,
        "architecture_alias": ctx.replaces_vllm_class.then_some(&ctx.alias),
        "tensor_parallel_size": ctx.tp,
        "enable_expert_parallel": ctx.ep,
        "plan": {
            "target": ctx.opts.target.as_str(),
            "device": ctx.plan.device.name,
            "feasible": ctx.failures.is_empty(),
            "predicted_failures": failures,
            "smallest_feasible": ctx.feasible.map(|(tp, ep)| json!({"tensor_parallel_size": tp, "enable_expert_parallel": ep})),
        },
        "features": feats,
    });
    vec![
        ("validation/serve_stage_a.sh".into(), serve_script(ctx, 'A')),
        ("validation/serve_stage_b.sh".into(), serve_script(ctx, 'B')),
        ("validation/smoke.py".into(), include_str!("assets/smoke.py").to_string()),
        ("validation/features.json".into(), serde_json::to_string_pretty(&features_json).unwrap_or_default() + "\n"),
        (format!("delivery/tests/e2e/models/configs/{}.yaml", ctx.name), yaml(ctx)),
        (format!("delivery/docs/source/tutorials/models/{}.md", ctx.name), tutorial(ctx)),
        (
            "delivery/docs/source/tutorials/models/index_entry.md".into(),
            format!("Add to the toctree of docs/source/tutorials/models/index.md:\n\n```\n{}\n```\n", ctx.name),
        ),
        (format!("delivery/report.{}.md", if ctx.opts.lang == Lang::Zh { "zh" } else { "en" }), report(ctx)),
    ]
}
