//! The serve-validation kit (two-stage `vllm serve` scripts, feature variants, the smoke test) and the
//! delivery skeletons (accuracy-CI YAML, tutorial, index entry, analysis report and runbook).

use super::{Context, Lang};
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
    /// Extra `vllm serve` arguments (and environment) of its variant.
    pub args: String,
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
        });
    }
    f.push(Feature {
        key: "ep",
        name: "Expert parallel (--enable-expert-parallel)",
        name_zh: "专家并行（--enable-expert-parallel）",
        status: if moe { "applicable" } else { "not-applicable" },
        reason: if moe { "MoE model".into() } else { "dense model: vLLM refuses EP without experts".into() },
        reason_zh: if moe { "MoE 模型".into() } else { "稠密模型：没有专家时 vLLM 拒绝开启 EP".into() },
        args: "--enable-expert-parallel".into(),
    });
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
        });
    }
    let (mtp_status, mtp_reason, mtp_reason_zh) = match (ctx.mtp_declared, ctx.mtp_present) {
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
    });
    f
}

/// The `--hf-overrides` object the scripts pass, if any: the architecture when the config names it
/// only in `text_config` (vLLM reads the top-level `architectures`; without it vLLM builds another
/// model and never the adapter), and no quantization when the adapter dequantizes fp8 at load.
fn hf_overrides(ctx: &Context<'_>) -> Option<String> {
    let mut m = serde_json::Map::new();
    if ctx.architecture_in_text_config_only {
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
/// ModelSlim checkpoint is `ascend` (vllm_ascend/quantization/modelslim_config.py).
fn quantization_arg(ctx: &Context<'_>) -> Option<&'static str> {
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
    if let Some(o) = hf_overrides(ctx) {
        let _ = write!(a, " --hf-overrides '{o}'");
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

fn serve_script(ctx: &Context<'_>, stage: char) -> String {
    let dummy = stage == 'A';
    let feats = features(ctx);
    let mut o = String::new();
    let _ = writeln!(o, "#!/usr/bin/env bash");
    let _ = writeln!(
        o,
        "# Stage {stage} of the serve validation for {} ({}) on {}: {}.\n# Generated by ckptkit (rules of vLLM {}). TP/EP: {}.",
        ctx.name,
        ctx.architecture,
        ctx.opts.target.as_str(),
        if dummy { "dummy weights (--load-format dummy): architecture, operators and API path" } else { "real weights: key mapping, fp8 dequant, sharding with real shapes" },
        crate::audit::VLLM_REFERENCE,
        ctx.tp_reason
    );
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
    o.push_str("# Usage: serve_stage_X.sh [variant]   variants: default");
    for f in feats.iter().filter(|f| f.status == "applicable" && !f.args.is_empty()) {
        let _ = write!(o, ", {}", f.key);
    }
    o.push_str(", eager, no-dynamo, text-only\n");
    for f in feats.iter().filter(|f| f.status != "applicable") {
        let _ = writeln!(o, "#   {}: {} ({})", f.key, f.status, f.reason);
    }
    o.push_str("set -euo pipefail\ncd /workspace\n");
    match ctx.ck.source.remote.as_deref() {
        // Read from the Hub: vLLM fetches the same repo at the commit ckptkit checked.
        Some(r) => {
            let _ = writeln!(o, "MODEL=\"${{MODEL:-{}}}\"", r.repo);
        }
        None => {
            let _ = writeln!(o, "MODEL=\"${{MODEL:-/models/{}}}\"", ctx.name);
        }
    }
    o.push_str("PORT=\"${PORT:-8000}\"\nVARIANT=\"${1:-default}\"\n");
    let _ = writeln!(
        o,
        "ARGS=(--tensor-parallel-size {} --max-model-len {} --max-num-seqs 16 --port \"$PORT\"{}{})",
        ctx.tp,
        ctx.plan.max_model_len,
        if ctx.ep { " --enable-expert-parallel" } else { "" },
        if dummy { " --load-format dummy" } else { "" }
    );
    if let Some(ov) = hf_overrides(ctx) {
        let _ = writeln!(o, "ARGS+=(--hf-overrides '{ov}')");
    }
    if let Some(q) = quantization_arg(ctx) {
        let _ = writeln!(o, "ARGS+=(--quantization {q})   # ModelSlim checkpoint (quant_model_description.json)");
    }
    if let Some(r) = ctx.ck.source.remote.as_deref() {
        let _ = writeln!(o, "ARGS+=(--revision {})   # the commit ckptkit read from the Hub", r.commit);
    }
    o.push_str("case \"$VARIANT\" in\n  default) ;;\n");
    for f in feats.iter().filter(|f| f.status == "applicable" && !f.args.is_empty()) {
        let _ = writeln!(o, "  {}) ARGS+=({}) ;;", f.key, f.args);
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
        "# Accuracy CI config for vllm-ascend (tests/e2e/models/configs). Generated by ckptkit; fill the metric values"
    );
    let _ = writeln!(o, "# from a real evaluation run (lm-eval), then remove the TODO markers.");
    let _ = writeln!(o, "model_name: \"{}\"", ctx.name);
    let _ = writeln!(o, "model_type: \"{}\"", if vl { "vllm-vlm" } else { "vllm" });
    let _ = writeln!(o, "hardware: \"{}\"", hardware(ctx));
    o.push_str("serve:\n");
    let _ = writeln!(o, "  tensor_parallel_size: {}", ctx.tp);
    let _ = writeln!(o, "  max_model_len: {}", ctx.plan.max_model_len.min(4096));
    if let Some(ov) = hf_overrides(ctx) {
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
                "加载时由适配代码反量化为 bf16（或先用 `ckptkit dequant` 离线转换）",
                "dequantized to bf16 at load (adapter) or offline with `ckptkit dequant`",
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
        "{} ({}) on {}. This page was generated by ckptkit from the checkpoint; complete the TODOs.\n",
        ctx.name,
        ctx.architecture,
        if ascend { "vLLM-Ascend" } else { "vLLM" }
    );
    o.push_str("| property | value |\n|---|---|\n");
    for (k, v) in facts(ctx, false) {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    o.push_str("\n## Supported Features\n\n| feature | status | note |\n|---|---|---|\n");
    for f in features(ctx) {
        let status = if f.status == "applicable" { "to verify" } else { f.status };
        let _ = writeln!(o, "| {} | {status} | {} |", f.name, f.reason);
    }
    o.push_str("\n## Environment Preparation\n\n");
    let _ = writeln!(o, "- Weights under `/models/{}`; start from `/workspace`.", ctx.name);
    let _ = writeln!(o, "- {} {} ({}).", ctx.tp, if ascend { "NPUs" } else { "GPUs" }, hardware(ctx));
    o.push_str("\n## Deployment\n\n```bash\n");
    let _ = writeln!(o, "vllm serve /models/{} {} --port 8000", ctx.name, serve_args(ctx));
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
        "{} ckptkit {} ({} vLLM {})\n",
        t("生成工具：", "Generated by"),
        env!("CARGO_PKG_VERSION"),
        t("规则版本", "rules of"),
        crate::audit::VLLM_REFERENCE
    );
    let _ = writeln!(o, "## {}\n", t("1 模型分析", "1 Model analysis"));
    o.push_str(t("| 项目 | 值 |\n|---|---|\n", "| item | value |\n|---|---|\n"));
    for (k, v) in facts(ctx, zh) {
        let _ = writeln!(o, "| {k} | {v} |");
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
                let _ = writeln!(o, "- `{}`：`` {} ``", f.code.as_str(), f.message.replace("``", "` `"));
            } else {
                let _ = writeln!(o, "- `{}` {}", f.code.as_str(), f.message);
            }
        }
    }
    let _ = writeln!(o, "\n## {}\n", t("3 特性矩阵", "3 Feature matrix"));
    o.push_str(t("| 特性 | 状态 | 说明 |\n|---|---|---|\n", "| feature | status | note |\n|---|---|---|\n"));
    for f in features(ctx) {
        if zh {
            let _ = writeln!(o, "| {} | {} | {} |", f.name_zh, status_zh(f.status), f.reason_zh);
        } else {
            let status = if f.status == "applicable" { "to verify (supported / unsupported)" } else { f.status };
            let _ = writeln!(o, "| {} | {status} | {} |", f.name, f.reason);
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
    let steps: [(&str, &str); 6] = [
        (
            "安装适配代码（插件：`pip install -e .`；或按 REGISTRY.md 放入 vLLM 源码树）。",
            "Install the adapter (plugin: `pip install -e .`; or into a vLLM tree per REGISTRY.md).",
        ),
        (
            "阶段 A：`bash validation/serve_stage_a.sh`，另一终端运行 `python3 validation/smoke.py --stage A`。",
            "Stage A: `bash validation/serve_stage_a.sh`; in another shell `python3 validation/smoke.py --stage A`.",
        ),
        (
            "阶段 B（必须）：`bash validation/serve_stage_b.sh`，再运行 `python3 validation/smoke.py --stage B`。",
            "Stage B (mandatory): `bash validation/serve_stage_b.sh`, then `python3 validation/smoke.py --stage B`.",
        ),
        (
            "逐个验证适用特性：`serve_stage_b.sh <variant>`（见特性矩阵）。",
            "Try each applicable feature: `serve_stage_b.sh <variant>` (see the feature matrix).",
        ),
        (
            "失败时依次回退：eager → no-dynamo → text-only。",
            "On failure fall back in order: eager → no-dynamo → text-only.",
        ),
        (
            "填写 `tests/e2e/models/configs` 的精度数值与教程中的 TODO。",
            "Fill the accuracy values in tests/e2e/models/configs and the tutorial's TODOs.",
        ),
    ];
    for (i, (a, b)) in steps.iter().enumerate() {
        let _ = writeln!(o, "{}. {}", i + 1, if zh { a } else { b });
    }
    o
}

/// Every kit and delivery file, relative to the output directory.
pub fn files(ctx: &Context<'_>) -> Vec<(String, String)> {
    let feats: Vec<serde_json::Value> = features(ctx)
        .iter()
        .map(
            |f| json!({"feature": f.key, "name": f.name, "status": f.status, "reason": f.reason, "serve_args": f.args}),
        )
        .collect();
    let features_json = json!({
        "schema": "ckptkit.features/1",
        "vllm_reference": crate::audit::VLLM_REFERENCE,
        "model": ctx.name,
        "architecture": ctx.architecture,
        "tensor_parallel_size": ctx.tp,
        "enable_expert_parallel": ctx.ep,
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
