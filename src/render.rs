//! Human renderings of the reports. The JSON form is the reports themselves (serde); these are
//! views of the same data.

use crate::audit::AuditReport;
use crate::findings::Finding;
use crate::manifest::{FileCheck, Verification};
// Every name that comes from a checkpoint, a config, an index, a path or a server goes through
// `f` before it is laid out: one line per record, and no control character reaches a terminal.
use crate::ui::field as f;
use std::fmt::Write;

pub use crate::ui::bytes;

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|x| f(&x.to_string()).into_owned()).unwrap_or_else(|| "?".into())
}

/// Longer shard lists are folded in the human report.
const SHARDS_SHOWN: usize = 8;

/// At most this many findings of one code and file are listed; the rest are counted.
const FOLD_AFTER: usize = 6;

pub fn audit(r: &AuditReport) -> String {
    let mut s = String::new();
    let m = &r.model;
    let _ = writeln!(
        s,
        "ckptpilot {} audit (vLLM {} rules, target {})",
        r.tool.version, r.tool.vllm_reference, r.tool.target
    );
    let _ = writeln!(
        s,
        "checkpoint  {}{}  ({} shard{}, {} tensors, {})",
        match &r.source.remote {
            Some(h) => f(&format!("{}@{} (Hub {}, commit {}; headers only)", h.repo, h.revision, h.endpoint, h.commit))
                .into_owned(),
            None => f(&r.source.root).into_owned(),
        },
        match &r.source.remote {
            Some(_) => String::new(),
            None => r.source.hf_repo.as_ref().map(|h| format!(" [{}]", f(h))).unwrap_or_default(),
        },
        r.shards.len(),
        if r.shards.len() == 1 { "" } else { "s" },
        r.tensors,
        bytes(r.tensor_bytes)
    );
    let _ = writeln!(
        s,
        "model       {} ({}){}",
        opt(&m.architecture),
        opt(&m.model_type),
        if m.architecture_source == Some("text_config.architectures") {
            " [architectures from text_config]"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "            layers {} ({} present), heads {}, kv heads {}, head_dim {}{}, hidden {}, intermediate {}, vocab {}",
        opt(&m.num_layers),
        m.layers_present,
        opt(&m.num_heads),
        opt(&m.num_kv_heads),
        opt(&m.head_dim),
        if m.head_dim_derived { " (derived)" } else { "" },
        opt(&m.hidden_size),
        opt(&m.intermediate_size),
        opt(&m.vocab_size)
    );
    let _ = writeln!(
        s,
        "            tie_word_embeddings {}{}",
        opt(&m.tie_word_embeddings),
        m.tie_source.as_ref().map(|t| format!(" ({t})")).unwrap_or_default()
    );
    if let Some(moe) = &m.moe {
        let _ = writeln!(
            s,
            "            MoE: {} experts ({}), top-{}, moe_intermediate {}, shared {}, layout {}, {} MoE layers present{}",
            moe.num_experts,
            moe.experts_key,
            opt(&moe.experts_per_tok),
            opt(&moe.moe_intermediate_size),
            moe.shared_experts.map(|x| x.to_string()).or(moe.shared_expert_intermediate_size.map(|x| format!("intermediate {x}"))).unwrap_or_else(|| "none".into()),
            m.expert_layout.unwrap_or("none found"),
            m.moe_layers_present,
            [
                moe.first_k_dense_replace.map(|k| format!(", first_k_dense_replace {k}")),
                moe.decoder_sparse_step.map(|k| format!(", decoder_sparse_step {k}")),
                (!moe.mlp_only_layers.is_empty()).then(|| format!(", mlp_only_layers {:?}", moe.mlp_only_layers)),
            ]
            .into_iter()
            .flatten()
            .collect::<String>()
        );
    } else {
        let _ = writeln!(s, "            MoE: no (dense)");
    }
    if let Some(mla) = &m.mla {
        let _ = writeln!(
            s,
            "            MLA: q_lora_rank {}, kv_lora_rank {}, qk_rope_head_dim {}, qk_nope_head_dim {}, v_head_dim {}",
            opt(&mla.q_lora_rank),
            mla.kv_lora_rank,
            opt(&mla.qk_rope_head_dim),
            opt(&mla.qk_nope_head_dim),
            opt(&mla.v_head_dim)
        );
    }
    let _ = writeln!(
        s,
        "            MTP: declared {}, present {}{}; vision {}; audio {}{}",
        m.mtp.declared,
        m.mtp.present,
        m.mtp.location.as_ref().map(|l| format!(" at {}", f(l))).unwrap_or_default(),
        if m.vision { "yes" } else { "no" },
        if m.audio { "yes" } else { "no" },
        m.qk_norm.as_ref().map(|q| format!("; q/k norm {q}")).unwrap_or_default()
    );
    if !m.other_stacks.is_empty() {
        let _ = writeln!(
            s,
            "            other stacks: {}",
            m.other_stacks.iter().map(|(k, v)| format!("{} ({v})", f(k))).collect::<Vec<_>>().join(", ")
        );
    }
    let q = &r.quantization;
    match &q.scheme {
        Some(sc) => {
            let _ = writeln!(
                s,
                "quant       {} (from {}){}{}; {} fp8 weights, {} paired with scales",
                sc.method,
                sc.source,
                sc.fp8_scale.map(|l| format!(", scales {l} `{}`", sc.scale_suffix.unwrap_or("?"))).unwrap_or_default(),
                sc.scale_fmt.as_ref().map(|f| format!(", scale_fmt {f}")).unwrap_or_default(),
                q.pairing.fp8_weights,
                q.pairing.paired
            );
        }
        None => {
            let _ = writeln!(s, "quant       none declared; {} fp8 tensors", q.pairing.fp8_weights);
        }
    }
    let _ =
        writeln!(s, "dtypes      {}", r.dtypes.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
    let _ = writeln!(s, "\nshards");
    let line = |sh: &crate::audit::ShardSummary| {
        format!("  {:<44} {:>7} tensors  {:>10}\n", f(&sh.file), sh.tensors, bytes(sh.bytes))
    };
    if r.shards.len() <= SHARDS_SHOWN + 2 {
        r.shards.iter().for_each(|sh| s.push_str(&line(sh)));
    } else {
        // Long lists: the first and last few; every shard is in --json.
        r.shards[..SHARDS_SHOWN - 2].iter().for_each(|sh| s.push_str(&line(sh)));
        let _ = writeln!(s, "  … {} more shards (all in --json)", r.shards.len() - SHARDS_SHOWN);
        r.shards[r.shards.len() - 2..].iter().for_each(|sh| s.push_str(&line(sh)));
    }
    let _ = writeln!(s, "\ntensors");
    for line in crate::audit::tree::render(&r.tree, bytes).lines() {
        let _ = writeln!(s, "  {line}");
    }
    let t = &r.summary;
    let _ = writeln!(s, "\nfindings    {} error(s), {} warning(s), {} info", t.errors, t.warnings, t.infos);
    s.push_str(&findings(&r.findings));
    s
}

pub fn findings(list: &[Finding]) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i < list.len() {
        let f = &list[i];
        let mut j = i;
        while j < list.len() && list[j].code == f.code && list[j].file == f.file {
            j += 1;
        }
        for g in &list[i..j.min(i + FOLD_AFTER)] {
            let _ = writeln!(
                s,
                "  {:<7} {:<26} {}{}",
                g.severity.as_str(),
                g.code.as_str(),
                g.file.as_ref().map(|x| format!("{}: ", crate::ui::field(x))).unwrap_or_default(),
                crate::ui::field(&g.message)
            );
        }
        if j - i > FOLD_AFTER {
            let _ =
                writeln!(s, "  {:<7} {:<26} … and {} more like these (all are in --json)", "", "", j - i - FOLD_AFTER);
        }
        if f.severity != crate::findings::Severity::Info {
            let _ = writeln!(s, "  {:<7} {:<26} hint: {}", "", "", crate::ui::field(&f.hint));
        }
        i = j;
    }
    s
}

pub fn verification(v: &Verification) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "ckptpilot verify {}", f(&v.root));
    for c in &v.files {
        let line = match c {
            FileCheck::Ok { file } => format!("  ok        {file}"),
            FileCheck::Changed { file, expected, actual } => {
                format!("  CHANGED   {file}: blake3 {}… expected {}…", &actual[..16], &expected[..16])
            }
            FileCheck::Resized { file, expected_bytes, actual_bytes } => {
                format!("  RESIZED   {file}: {actual_bytes} bytes, expected {expected_bytes}")
            }
            FileCheck::Missing { file } => format!("  MISSING   {file}"),
            FileCheck::New { file } => format!("  NEW       {file} (not in the manifest)"),
            FileCheck::Unreadable { file, error } => format!("  UNREADABLE {file}: {error}"),
            FileCheck::NotRegular { file, kind } => format!("  ODD       {file}: {kind}, not a regular file"),
        };
        let _ = writeln!(s, "{}", f(&line));
    }
    let _ = writeln!(s, "{}", if v.ok { "all files match" } else { "the checkpoint differs from the manifest" });
    s
}

/// The plan as a matrix: one row per configuration, one column per rule (✔ pass, ! caveat, ✘ fail,
/// · not applicable) with the numbers, then memory, then each distinct failure with its fix.
pub fn plan(r: &crate::plan::PlanReport) -> String {
    use crate::plan::{Status, Verdict};
    let mut o = String::new();
    let _ = writeln!(o, "ckptpilot plan (rules of vLLM {})", r.vllm_reference);
    let _ = writeln!(
        o,
        "model    {}  ({}, {}; shapes from {})",
        f(&r.model),
        opt(&r.architecture),
        opt(&r.model_type),
        if r.source == "weights" { "the tensors" } else { "config.json" }
    );
    let _ = writeln!(
        o,
        "family   {}",
        match (&r.family.family, r.family.verified) {
            (Some(f), true) => format!(
                "{f} (verified: recorded vLLM {} runs at TP {})",
                r.vllm_reference,
                r.family.verified_tp.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            ),
            (Some(f), false) => format!(
                "{} ({}) — UNVERIFIED: no recorded vLLM run backs these rules for this architecture; figures marked ~ are estimates",
                f,
                match r.family.matched_by {
                    "generic" => "the generic decoder",
                    "model_type" => "chosen by model_type",
                    _ => "rules only",
                }
            ),
            (None, _) => "none (no parameters to count)".to_string(),
        }
    );
    let _ = writeln!(o, "quant    {}", r.quantization.as_deref().unwrap_or("none"));
    let _ = writeln!(o, "target   {} on {}: {}", r.target.as_str(), r.device.name, r.device.description);
    let _ = writeln!(
        o,
        "serving  max-model-len {} × {} seqs, gpu-memory-utilization {}, kv-cache-dtype {}, activation reserve {}",
        r.max_model_len,
        r.max_num_seqs,
        r.gpu_memory_utilization,
        r.kv_cache_dtype,
        bytes(r.activation_reserve_bytes)
    );
    let _ = writeln!(o);
    let mark = |st: Status| match st {
        Status::Pass => "✔",
        Status::Caveat => "!",
        Status::Fail => "✘",
        Status::NotApplicable => "·",
    };
    use crate::plan::Rule;
    let cell = |c: &crate::plan::ConfigPlan, rule: Rule| {
        c.checks.iter().find(|k| k.rule == rule).map_or("·".to_string(), |k| {
            if k.status == Status::NotApplicable {
                "·".to_string()
            } else {
                format!("{} {}", mark(k.status), k.short)
            }
        })
    };
    // Rule columns: those that apply somewhere and differ between configurations; the rest are
    // stated once above the matrix. weights and kv-cache are shown with the memory columns.
    let mut columns: Vec<Rule> = Vec::new();
    let mut same: Vec<String> = Vec::new();
    for rule in r.rules.iter().copied().filter(|r| !matches!(*r, Rule::Weights | Rule::KvCache)) {
        let cells: Vec<String> = r.configs.iter().map(|c| cell(c, rule)).collect();
        if cells.iter().all(|c| c == "·") {
            continue;
        }
        if r.configs.len() > 1 && cells.iter().all(|c| *c == cells[0]) {
            same.push(format!("{rule} {}", cells[0]));
        } else {
            columns.push(rule);
        }
    }
    if !same.is_empty() {
        let _ = writeln!(o, "every configuration: {}", same.join(", "));
    }
    let mut header: Vec<String> = vec!["config".into(), "verdict".into()];
    header.extend(columns.iter().map(|s| s.to_string()));
    header.extend(["weights/rank".into(), "kv/token".into(), format!("seqs@{}", r.max_model_len)]);
    let mut rows: Vec<Vec<String>> = Vec::new();
    for c in &r.configs {
        let mut name = format!("tp={}", c.tp);
        if c.ep {
            name.push_str(&format!(" ep={}", c.ep_size));
        }
        if c.dp > 1 {
            name.push_str(&format!(" dp={}", c.dp));
        }
        if c.pp > 1 {
            name.push_str(&format!(" pp={}", c.pp));
        }
        let verdict = match c.verdict {
            Verdict::Feasible => "✔ ok",
            Verdict::FeasibleWithCaveats => "! caveats",
            Verdict::Infeasible => "✘ NO",
        };
        let mut row = vec![name, verdict.to_string()];
        row.extend(columns.iter().map(|&rule| cell(c, rule)));
        let status_of =
            |rule: Rule| c.checks.iter().find(|k| k.rule == rule).map_or(Status::NotApplicable, |k| k.status);
        let est = if c.unverified.is_empty() { "" } else { "~" };
        row.push(format!("{} {est}{}", mark(status_of(Rule::Weights)), bytes(c.per_rank_weight_bytes)));
        row.push(format!("{est}{}", bytes(c.kv_bytes_per_token)));
        row.push(match status_of(Rule::KvCache) {
            Status::NotApplicable => "·".to_string(),
            st => format!("{} {}", mark(st), c.max_seqs_at_max_model_len),
        });
        rows.push(row);
    }
    let width = |i: usize| {
        std::iter::once(&header[i]).chain(rows.iter().map(|r| &r[i])).map(|s| s.chars().count()).max().unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(o, "{}", line(&header));
    for row in &rows {
        let _ = writeln!(o, "{}", line(row));
    }
    let _ = writeln!(
        o,
        "\n✔ pass  ! caveat  ✘ fail  · not applicable. Numbers are per rank (heads, KV heads, MLP width, MoE intermediate I or experts, vocab rows); weights/rank: the most loaded rank, as the target holds them"
    );
    // Each distinct failure or caveat once, with the configurations it hits.
    let mut seen: Vec<(String, String, Option<String>, Vec<String>)> = Vec::new();
    for c in &r.configs {
        let name = if c.ep { format!("tp={} ep", c.tp) } else { format!("tp={}", c.tp) };
        for k in c.checks.iter().filter(|k| matches!(k.status, Status::Fail | Status::Caveat)) {
            let tag = if k.status == Status::Fail { format!("✘ {}", k.rule) } else { format!("! {}", k.rule) };
            match seen.iter_mut().find(|(t, m, _, _)| *t == tag && *m == k.message) {
                Some(e) => e.3.push(name.clone()),
                None => seen.push((tag, k.message.clone(), k.fix.clone(), vec![name.clone()])),
            }
        }
    }
    if !seen.is_empty() {
        let _ = writeln!(o, "\nWhat vLLM would say");
        for (tag, msg, fix, configs) in &seen {
            let _ = writeln!(o, "  {tag} [{}]", configs.join(", "));
            for l in msg.lines() {
                let _ = writeln!(o, "      {}", f(l));
            }
            if let Some(x) = fix {
                let _ = writeln!(o, "      fix: {}", f(x));
            }
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\nNotes");
        for n in &r.notes {
            let _ = writeln!(o, "  - {}", f(n));
        }
    }
    o
}

/// How `remap` prints its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Human,
    Json,
    Csv,
    Markdown,
}

fn tp_cell(t: &crate::remap::TpSplit) -> String {
    use crate::remap::TpSplit;
    match t {
        TpSplit::Replicated => "all".into(),
        TpSplit::None => "-".into(),
        TpSplit::ByLoader => "by loader".into(),
        TpSplit::ExpertOwner { rank } => format!("rank {rank}"),
        TpSplit::Split { slices } => {
            let dim = slices.first().map_or(0, |s| s.dim);
            let parts: Vec<String> = slices.iter().map(|s| format!("{}:{}", s.start, s.end)).collect();
            format!("dim{dim} {}", parts.join(" "))
        }
    }
}

fn action_str(a: crate::remap::Action) -> &'static str {
    use crate::remap::Action;
    match a {
        Action::Load => "load",
        Action::Stack => "stack",
        Action::Expert => "expert",
        Action::DequantizeThenLoad => "dequantize-then-load",
        Action::Skip => "skip",
        Action::Buffer => "buffer",
        Action::Unmapped => "unmapped",
    }
}

fn shard_str(v: &Option<serde_json::Value>) -> String {
    match v {
        None => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(x) => x.to_string(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The remap table: every row for json / csv / md; folded by name pattern for humans.
pub fn remap(r: &crate::remap::RemapReport, format: TableFormat) -> String {
    let mut o = String::new();
    let cells = |row: &crate::remap::Row| -> Vec<String> {
        vec![
            f(&row.checkpoint_name).into_owned(),
            f(&row.shard_file).into_owned(),
            row.dtype.to_string(),
            format!("{:?}", row.shape),
            f(row.param.as_deref().unwrap_or_default()).into_owned(),
            shard_str(&row.shard_id),
            row.expert_id.map(|e| e.to_string()).unwrap_or_default(),
            row.partition
                .map(|p| serde_json::to_value(p).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
                .unwrap_or_default(),
            tp_cell(&row.tp),
            match &row.reason {
                Some(why) => format!("{}: {why}", action_str(row.action)),
                None => action_str(row.action).to_string(),
            },
        ]
    };
    const HEAD: [&str; 10] = [
        "checkpoint_name",
        "shard_file",
        "dtype",
        "shape",
        "param",
        "shard_id",
        "expert_id",
        "partition",
        "tp_slice",
        "action",
    ];
    match format {
        TableFormat::Json => {
            let _ = writeln!(o, "{}", serde_json::to_string_pretty(r).expect("remap serializes"));
        }
        TableFormat::Csv => {
            let _ = writeln!(o, "{}", HEAD.join(","));
            for row in &r.rows {
                let _ = writeln!(o, "{}", cells(row).iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
            }
        }
        TableFormat::Markdown => {
            let _ = writeln!(o, "| {} |", HEAD.join(" | "));
            let _ = writeln!(o, "|{}|", vec!["---"; HEAD.len()].join("|"));
            for row in &r.rows {
                let _ = writeln!(
                    o,
                    "| {} |",
                    cells(row).iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | ")
                );
            }
        }
        TableFormat::Human => {
            let _ = writeln!(
                o,
                "ckptpilot remap (rules of vLLM {}, target {}) at TP {}{}",
                r.vllm_reference,
                r.target.as_str(),
                r.tp,
                if r.ep { " with EP" } else { "" }
            );
            let _ = writeln!(o, "model    {}  ({})", f(&r.model), opt(&r.architecture));
            if let Some(f) = &r.family {
                let _ = writeln!(
                    o,
                    "family   {}{}: {}",
                    f.family,
                    f.confidence.map(|c| format!(" (inferred, match {:.0}%)", c * 100.0)).unwrap_or_default(),
                    f.vllm_source
                );
                if !f.recorded {
                    let _ = writeln!(
                        o,
                        "         UNVERIFIED: no recorded vLLM run backs these rules for this architecture; every row is the rules' guess (`unverified` in --json; `ckptpilot families` lists what is verified)"
                    );
                }
            }
            // Fold rows whose names differ only in layer / expert numbers.
            let pat = crate::checkpoint::names::pattern;
            let mut groups: Vec<(String, String, String, String, String, String, usize)> = Vec::new();
            for row in &r.rows {
                let key = (
                    f(&pat(&row.checkpoint_name)).into_owned(),
                    row.param
                        .as_deref()
                        .map(|p| f(&pat(p)).into_owned())
                        .or_else(|| row.routed_to.as_deref().map(|r| format!("✘ {}", f(&pat(r)))))
                        .unwrap_or_default(),
                    shard_str(&row.shard_id),
                    row.expert_id.map(|_| "*".to_string()).unwrap_or_default(),
                    match &row.reason {
                        Some(why) => format!("{}: {}", action_str(row.action), f(why)),
                        None => action_str(row.action).to_string(),
                    },
                    if row.expert_id.is_some() && r.ep { "by expert owner".to_string() } else { tp_cell(&row.tp) },
                );
                match groups.iter_mut().find(|g| {
                    (g.0.as_str(), g.1.as_str(), g.2.as_str(), g.3.as_str(), g.4.as_str(), g.5.as_str())
                        == (
                            key.0.as_str(),
                            key.1.as_str(),
                            key.2.as_str(),
                            key.3.as_str(),
                            key.4.as_str(),
                            key.5.as_str(),
                        )
                }) {
                    Some(g) => g.6 += 1,
                    None => groups.push((key.0, key.1, key.2, key.3, key.4, key.5, 1)),
                }
            }
            let head = ["n", "checkpoint", "→ vLLM parameter", "shard", "expert", "tp slice", "action"];
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|g| {
                    vec![g.6.to_string(), g.0.clone(), g.1.clone(), g.2.clone(), g.3.clone(), g.5.clone(), g.4.clone()]
                })
                .collect();
            let w: Vec<usize> = (0..head.len())
                .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([head[i].chars().count()]).max().unwrap_or(0))
                .collect();
            let line = |c: &[String]| -> String {
                c.iter()
                    .enumerate()
                    .map(|(i, x)| {
                        if i + 1 < c.len() {
                            format!("{x}{}", " ".repeat(w[i] - x.chars().count() + 2))
                        } else {
                            x.clone()
                        }
                    })
                    .collect::<String>()
            };
            let _ = writeln!(o, "\n{}", line(&head.map(String::from)));
            for row in &rows {
                let _ = writeln!(o, "{}", line(row));
            }
            let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
            let _ = writeln!(o, "\n{} tensors: {}", r.rows.len(), counts.join(", "));
            let _ = writeln!(o, "\nReverse check");
            o.push_str(&findings(&r.findings));
        }
    }
    o
}

/// Where a remote checkpoint's headers came from, for stderr: the repo, the revision and the commit
/// it resolved to, the endpoint, and what reading it cost.
pub fn remote_source(r: &crate::hub::Remote) -> String {
    let cost = if r.requests == 0 {
        format!("all {} files from the cache, no request", r.files_cached)
    } else {
        format!(
            "{} requests, {} received ({} files fetched, {} from the cache)",
            r.requests,
            bytes(r.bytes_fetched),
            r.files_fetched,
            r.files_cached
        )
    };
    format!(
        "remote: {}@{} = commit {} on {}: headers only, {} shards; {cost}",
        r.repo,
        r.revision,
        r.commit,
        r.endpoint,
        r.shards.len()
    )
}

/// `ckptpilot families`: a table for people, or the README's Markdown table.
pub fn families(c: &crate::arch::coverage::Coverage, markdown: bool) -> String {
    let mut o = String::new();
    let tps = |k: &crate::arch::coverage::Known| {
        if k.tp_verified.is_empty() {
            "-".to_string()
        } else {
            k.tp_verified.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        }
    };
    let class = |k: &crate::arch::coverage::Known| {
        k.vllm_class.as_deref().map(|c| c.rsplit('.').next().unwrap_or(c).to_string()).unwrap_or_else(|| "?".into())
    };
    if markdown {
        let _ = writeln!(o, "| architecture | family | vLLM class | TP verified | vLLM | evidence |");
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for k in &c.architectures {
            let _ = writeln!(
                o,
                "| `{}` | {} | `{}` | {} | {} | {} |",
                k.architecture,
                k.family,
                class(k),
                tps(k),
                k.vllm.as_deref().unwrap_or("-"),
                if k.verified {
                    k.fixtures.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                } else {
                    "rules only, not verified".into()
                }
            );
        }
        let _ =
            writeln!(o, "\n{} architectures, {} verified by a recorded vLLM run.", c.architectures.len(), c.verified);
        return o;
    }
    let _ = writeln!(
        o,
        "ckptpilot families: {} architectures, {} verified by a recorded vLLM run",
        c.architectures.len(),
        c.verified
    );
    let rows: Vec<[String; 5]> = c
        .architectures
        .iter()
        .map(|k| {
            [
                f(&k.architecture).into_owned(),
                f(&k.family).into_owned(),
                class(k),
                tps(k),
                if k.verified { format!("vLLM {}", k.vllm.as_deref().unwrap_or("?")) } else { "rules only".into() },
            ]
        })
        .collect();
    let head = ["architecture", "family", "vLLM class", "TP verified", "evidence"];
    let w: Vec<usize> =
        (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).chain([head[i].len()]).max().unwrap_or(0)).collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, x)| format!("{x:<w$}", w = w[i] + 2))
            .collect::<String>()
            .trim_end()
            .to_string()
    };
    let _ = writeln!(o, "{}", line(&head.map(String::from)));
    for r in &rows {
        let _ = writeln!(o, "{}", line(r));
    }
    o
}

/// `ckptpilot match`: the candidates, then the difference against the best.
pub fn matching(r: &crate::matching::MatchReport, top: usize) -> String {
    use crate::ui::field;
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "ckptpilot match (rules of {})", crate::target::VLLM_REFERENCE);
    let _ = writeln!(
        o,
        "model    {}  ({}, {})",
        field(&r.model),
        field(r.architecture.as_deref().unwrap_or("no architecture")),
        field(r.model_type.as_deref().unwrap_or("no model_type"))
    );
    let _ = writeln!(o, "vLLM     {}", field(&r.vllm));
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<22} {:>6}  {:>15}  {:>13}  {:>6}  vLLM class",
        "family", "score", "tensors routed", "params filled", "shapes"
    );
    for c in r.candidates.iter().take(top.max(1)) {
        let _ = writeln!(
            o,
            "{:<22} {:>5.1}%  {:>15}  {:>13}  {:>6}  {}{}",
            field(&c.family),
            c.score * 100.0,
            format!("{}/{}", c.routed, c.tensors),
            format!("{}/{}", c.filled, c.params),
            if c.shape_mismatches == 0 { "ok".to_string() } else { format!("{} off", c.shape_mismatches) },
            field(&c.vllm_class),
            match (c.model_type_match, c.renames.len()) {
                (true, 0) => "  (lists this model_type)".to_string(),
                (false, 0) => String::new(),
                (m, n) => format!(
                    "  (after {n} rename{}{})",
                    if n == 1 { "" } else { "s" },
                    if m { "; lists this model_type" } else { "" }
                ),
            }
        );
    }
    let Some(d) = &r.difference else { return o };
    let _ = writeln!(o);
    let _ = writeln!(o, "Against `{}`:", field(&d.family));
    let list = |o: &mut String, title: &str, items: &[crate::matching::PatternCount]| {
        if items.is_empty() {
            return;
        }
        let _ = writeln!(o, "  {title}");
        for p in items.iter().take(12) {
            let _ = writeln!(o, "    {} ×{}", field(&p.pattern), p.count);
        }
        if items.len() > 12 {
            let _ = writeln!(o, "    … and {} more (all are in --json)", items.len() - 12);
        }
    };
    list(&mut o, "tensors no rule explains:", &d.unexplained);
    list(&mut o, "parameters left empty:", &d.unfilled);
    if !d.shape_differences.is_empty() {
        let _ = writeln!(o, "  shapes that differ from the config:");
        for s in d.shape_differences.iter().take(12) {
            let _ =
                writeln!(o, "    {} ×{}: {:?}, expected {:?}", field(&s.pattern), s.count, s.checkpoint, s.expected);
        }
    }
    if !d.config_keys_missing.is_empty() {
        let _ = writeln!(
            o,
            "  config keys the family reads that config.json lacks: {}",
            field(&d.config_keys_missing.join(", "))
        );
    }
    if !d.renames.is_empty() {
        let _ = writeln!(o, "  renames that would explain them:");
        for n in &d.renames {
            let _ = writeln!(o, "    {} `{}` → `{}` ({} tensors)", n.kind, field(&n.from), field(&n.to), n.tensors);
        }
    }
    if let Some(x) = &d.derived {
        if x.unexplained_after == 0 && x.unfilled_after == 0 && x.shape_mismatches_after == 0 {
            let _ = writeln!(o, "  with them, every tensor is routed and every parameter filled (remap rerun): `--emit-rules FILE` writes the rule file");
        } else {
            let _ = writeln!(
                o,
                "  with them (remap rerun): {} tensors still unexplained, {} parameters still empty, {} shapes off",
                x.unexplained_after, x.unfilled_after, x.shape_mismatches_after
            );
        }
    }
    if d.unexplained.is_empty() && d.unfilled.is_empty() && d.shape_differences.is_empty() {
        let _ = writeln!(o, "  nothing: the family explains every tensor and fills every parameter");
    }
    o
}
