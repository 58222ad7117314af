//! The MTP draft model's load, checked like the main model's: with `--speculative-config` (method
//! mtp) vLLM builds a second model from the same checkpoint (`DeepSeekMTP` …) whose loader reads the
//! spec layers the main model skips. A spec-layer tensor it cannot place, a shape it rejects or a
//! parameter nothing fills breaks (or silently empties) the draft only; the main model still serves,
//! so every finding here is a warning.
//!
//! The routing follows the family's `mtp.draft_model` (see [`crate::arch::rules::DraftModel`]): a
//! spec layer's own modules keep their names, shared ones load into the top-level parameter from
//! the first spec layer, and every other weight is the decoder block's, routed by the main family's
//! rules and renamed under the draft's `block`.

use super::router::{layer_index, Router};
use super::rules;
use super::{apply_mapper_into, Filled, Folder, Routed};
use crate::checkpoint::names::has;
use crate::checkpoint::Checkpoint;
use crate::findings::{Code, Finding};
use crate::model::expected::Vars;
use crate::model::ModelSpec;
use rules::Family;
use rustc_hash::FxHashMap;

/// The draft's findings for `ck` under `family`; none when the family does not describe its draft,
/// the config declares no spec layer, or the checkpoint has no tensor of any (`mtp-missing` says so).
pub fn check(ck: &Checkpoint, family: &Family) -> Vec<Finding> {
    let (Some(cfg), Some(dm)) = (ck.config.as_ref(), family.mtp.as_ref().and_then(|m| m.draft_model.as_ref())) else {
        return Vec::new();
    };
    let Some(n) = cfg.num_layers else { return Vec::new() };
    if cfg.sizes_in_range().is_err() {
        return Vec::new();
    }
    let spec_layers = n..n.saturating_add(cfg.mtp_layers);
    let quant = ck.quant_scheme();
    let Some(draft) = ModelSpec::build_draft(cfg, ck.config_json.as_ref(), family, quant) else {
        return Vec::new();
    };
    let expected = &draft.spec.params;
    let by_name: FxHashMap<&str, usize> = expected.iter().enumerate().map(|(i, e)| (e.name.as_str(), i)).collect();
    // The decoder block of a spec layer routes as a main-model layer would.
    let mut main = family.clone();
    main.mtp = None;
    let vars = Vars::new(cfg, ck.config_json.as_ref());
    let router = Router::new(&main, &vars);
    let mut filled = Filled::new(expected);
    let mut findings = Folder::default();
    let (mut mapped, mut buf) = (String::new(), (String::new(), String::new()));
    let mut seen_spec_layer = false;
    let class = &draft.class;
    for (ti, t) in ck.tensors().enumerate() {
        let e = t.entry;
        // Only spec-layer tensors and top-level shared ones concern the draft: decided before any
        // substring search, as most tensors are neither.
        let layer = layer_index(&e.name);
        let in_spec = layer.is_some_and(|l| spec_layers.contains(&l));
        if layer.is_some() && !in_spec {
            continue;
        }
        let shared = dm.shared.iter().any(|s| has(&e.name, s));
        if !in_spec && !shared {
            continue;
        }
        if !apply_mapper_into(&family.mapper, &e.name, &mut mapped) {
            continue;
        }
        let (shard, expert) = match layer {
            Some(l) if in_spec => {
                seen_spec_layer = true;
                let at = format!("layers.{l}.");
                if dm.own.iter().any(|o| has(&mapped, o)) {
                    (None, None)
                } else if shared {
                    // vLLM loads the shared weight from the first spec layer only.
                    if l != spec_layers.start {
                        continue;
                    }
                    let Some(pos) = mapped.find(&at) else { continue };
                    // `model.layers.{l}.X` → `model.X` (_rewrite_spec_layer_name).
                    mapped.replace_range(pos..pos + at.len(), "");
                    (None, None)
                } else {
                    match router.route_into(&e.name, &mut buf) {
                        Routed::Param { shard, expert, .. } => {
                            let Some(pos) = buf.0.find(&at) else { continue };
                            buf.0.insert_str(pos + at.len(), &dm.block);
                            std::mem::swap(&mut mapped, &mut buf.0);
                            (shard.map(|s| s.key().into_owned()), expert)
                        }
                        // Skipped, buffers and KV-cache scales as the main model's rules say.
                        _ => continue,
                    }
                }
            }
            // A top-level shared weight (the embedding): the draft loads it too, where it has it.
            _ if by_name.contains_key(mapped.as_str()) => (None, None),
            _ => continue,
        };
        let Some(&pi) = by_name.get(mapped.as_str()) else {
            findings.add(Code::MtpDraftUnmapped, &e.name, Some(&t.shard.name), || {
                format!("{} → {mapped}: {class} has no such parameter (KeyError: '{mapped}' loading the draft)", e.name)
            });
            continue;
        };
        let exp = &expected[pi];
        let key = shard.unwrap_or_default();
        let Some(si) = exp.shards.iter().position(|(k, _)| *k == key) else {
            findings.add(Code::MtpDraftUnmapped, &e.name, Some(&t.shard.name), || {
                format!("{} → {mapped}: {class}'s parameter has no shard `{key}`", e.name)
            });
            continue;
        };
        if let Some(want) = exp.shards[si].1.as_ref().filter(|w| **w != e.shape) {
            findings.add(Code::MtpDraftShape, &e.name, Some(&t.shard.name), || {
                format!(
                    "{} is {:?}; {class}'s {mapped}{} expects {:?} from the config",
                    e.name,
                    e.shape,
                    if key.is_empty() { String::new() } else { format!(" shard {key}") },
                    want
                )
            });
        }
        for x in Filled::slots_of(exp, expert) {
            // Two tensors filling one slot is what the draft does with a shared embedding.
            filled.insert(expected, (pi, si, x), ti as u32);
        }
    }
    if !seen_spec_layer {
        return Vec::new();
    }
    for (name, what) in filled.unfilled(expected) {
        findings.add(Code::MtpDraftUnfilled, name, None, || {
            format!("{class}'s {name}{what}: no checkpoint tensor fills it")
        });
    }
    findings.finish()
}
