//! Whether vLLM 0.33.0 serves an architecture at all, and how: its own class, a registered base
//! architecture (a pooling / generation variant), or its Transformers backend — or the error it stops
//! with. `audit` (`architecture-unsupported`) and `plan` (its `target` rule) both read [`serving`], so
//! the two never disagree.
//!
//! The data (`vllm_registry.json`) is written by `tools/oracle/registry.py` from the oracle's own vLLM
//! and transformers; the resolution order mirrors `vllm/model_executor/models/registry.py ::
//! _ModelRegistry.inspect_model_cls` with `model_impl="auto"` and `trust_remote_code` off, after
//! `transformers.AutoConfig` has read the config.

use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

#[derive(Debug, Deserialize)]
struct Raw {
    vllm_version: String,
    transformers_version: String,
    registered: BTreeMap<String, String>,
    previously: BTreeMap<String, String>,
    out_of_tree: BTreeMap<String, String>,
    transformers_backend: Vec<String>,
    config_model_types: Vec<String>,
    suffixes: Vec<String>,
}

/// vLLM 0.33.0's model registry, as recorded.
#[derive(Debug)]
pub struct VllmRegistry {
    pub vllm_version: String,
    pub transformers_version: String,
    /// Architecture → `module:Class`.
    pub registered: BTreeMap<String, String>,
    previously: BTreeMap<String, String>,
    out_of_tree: BTreeMap<String, String>,
    transformers_backend: HashSet<String>,
    config_model_types: HashSet<String>,
    suffixes: Vec<String>,
}

impl VllmRegistry {
    /// Whether vLLM reads a config of this model type without remote code.
    pub fn knows_model_type(&self, model_type: &str) -> bool {
        self.config_model_types.contains(model_type)
    }
}

pub fn registry() -> &'static VllmRegistry {
    static R: OnceLock<VllmRegistry> = OnceLock::new();
    R.get_or_init(|| {
        let raw: Raw = serde_json::from_str(include_str!("vllm_registry.json"))
            .expect("src/arch/vllm_registry.json is written by tools/oracle/registry.py");
        VllmRegistry {
            vllm_version: raw.vllm_version,
            transformers_version: raw.transformers_version,
            registered: raw.registered,
            previously: raw.previously,
            out_of_tree: raw.out_of_tree,
            transformers_backend: raw.transformers_backend.into_iter().collect(),
            config_model_types: raw.config_model_types.into_iter().collect(),
            suffixes: raw.suffixes,
        }
    })
}

/// The registered architecture vLLM 0.33.0 converts `arch` from when it does not register the name
/// (`FooForSequenceClassification` → `FooForCausalLM`, wrapped by `adapters.as_seq_cls_model`:
/// `_ModelRegistry._normalize_arch`), with its `module:Class`.
pub fn converted_base(arch: &str) -> Option<(String, String)> {
    let r = registry();
    if r.registered.contains_key(arch) {
        return None;
    }
    let suffix = r.suffixes.iter().find(|s| arch.ends_with(s.as_str()))?;
    let stem = &arch[..arch.len() - suffix.len()];
    r.suffixes.iter().map(|s| format!("{stem}{s}")).find_map(|b| r.registered.get(&b).map(|c| (b.clone(), c.clone())))
}

/// How vLLM 0.33.0 serves a config's architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serving {
    /// A class of its own: `module:Class`.
    Native { arch: String, class: String },
    /// Not registered under its own name, but its suffix maps it to a registered base
    /// (`FooForSequenceClassification` → `FooForCausalLM`, converted for pooling).
    AsBase { arch: String, base: String },
    /// Not registered; transformers has a class of that name vLLM can drive (its Transformers backend).
    TransformersBackend { arch: String },
    /// The config names its own code (`auto_map`): vLLM reads it only with `--trust-remote-code`.
    RemoteCode { model_type: String },
    /// vLLM stops before building anything, with this message.
    Refused { message: String, fix: String },
    /// The config names no architecture: nothing to resolve (other checks say so).
    NoArchitecture,
}

impl Serving {
    pub fn refused(&self) -> bool {
        matches!(self, Serving::Refused { .. })
    }

    /// One line on how vLLM resolves the name (`match`'s header; audit's family-closest note).
    pub fn summary(&self) -> String {
        match self {
            Serving::Native { class, .. } => format!("registered as {class}"),
            Serving::AsBase { base, .. } => format!("served as the registered {base}"),
            Serving::TransformersBackend { .. } => "served through vLLM's Transformers backend".into(),
            Serving::RemoteCode { .. } => "the config's own code (--trust-remote-code)".into(),
            Serving::Refused { message, .. } => format!("refused: {message}"),
            Serving::NoArchitecture => "no architecture in config.json".into(),
        }
    }
}

/// Resolve `architectures` / `model_type` as vLLM 0.33.0 does.
pub fn serving(architectures: &[String], model_type: Option<&str>, remote_config: bool) -> Serving {
    let r = registry();
    let fix_rename = "register the architecture with a plugin (`ckptpilot stub`), or serve it as a class vLLM has with `--hf-overrides '{\"architectures\": [\"…\"]}'` when the weights fit that class (`ckptpilot match`)";
    match model_type {
        Some(mt) if !r.config_model_types.contains(mt) => {
            if remote_config {
                return Serving::RemoteCode { model_type: mt.to_string() };
            }
            return Serving::Refused {
                message: format!(
                    "ValueError: The checkpoint you are trying to load has model type `{mt}` but Transformers does not recognize this architecture (transformers {} :: AutoConfig; vLLM stops at the config)",
                    r.transformers_version
                ),
                fix: "a config vLLM can read: a `model_type` transformers knows (or one the plugin registers with AutoConfig.register), or `auto_map` with its code and --trust-remote-code".into(),
            };
        }
        None if !architectures.is_empty() && !remote_config => {
            return Serving::Refused {
                message: "ValueError: Unrecognized model … Should have a `model_type` key in its config.json (transformers AutoConfig)".into(),
                fix: "add the `model_type` of the model's config class to config.json".into(),
            };
        }
        _ => {}
    }
    let Some(first) = architectures.first() else { return Serving::NoArchitecture };
    let registered = |a: &str| r.registered.contains_key(a);
    // Fallback to the Transformers backend, before any suffix resolution, when no name is registered.
    if architectures.iter().all(|a| !registered(a)) && r.transformers_backend.contains(first.as_str()) {
        return Serving::TransformersBackend { arch: first.clone() };
    }
    for a in architectures {
        if let Some(class) = r.registered.get(a) {
            return Serving::Native { arch: a.clone(), class: class.clone() };
        }
        if let Some(suffix) = r.suffixes.iter().find(|s| a.ends_with(s.as_str())) {
            let stem = &a[..a.len() - suffix.len()];
            if let Some(base) = r.suffixes.iter().map(|s| format!("{stem}{s}")).find(|b| registered(b)) {
                return Serving::AsBase { arch: a.clone(), base };
            }
        }
    }
    let list = format!("{architectures:?}").replace('"', "'");
    for a in architectures {
        if let Some(v) = r.previously.get(a) {
            return Serving::Refused {
                message: format!("ValueError: Model architecture {a} was supported in vLLM until v{v}, and is not supported anymore. Please use an older version of vLLM if you want to use this model architecture."),
                fix: format!("serve it with vLLM {v} or older, or port the model as a plugin (`ckptpilot stub`)"),
            };
        }
        if let Some(url) = r.out_of_tree.get(a) {
            return Serving::Refused {
                message: format!("ValueError: Model architecture {a} is not supported in-tree anymore. Please install the plugin at {url} if you want to use this model architecture."),
                fix: format!("install the plugin at {url}"),
            };
        }
    }
    Serving::Refused {
        message: format!(
            "ValueError: Model architectures {list} are not supported for now. Supported architectures: [… the {} vLLM {} registers] (vllm/model_executor/models/registry.py :: _raise_for_unsupported; transformers {} has no class of that name for its Transformers backend either)",
            r.registered.len(),
            r.vllm_version,
            r.transformers_version
        ),
        fix: fix_rename.into(),
    }
}

/// vLLM's refusal of a config's architecture (message, fix), unless a user rule file lists one of
/// its architectures: such a file describes a plugin's model, and the plugin registers it.
pub fn refusal(
    rules: &crate::arch::rules::RuleSet,
    architectures: &[String],
    model_type: Option<&str>,
    remote_config: bool,
) -> Option<(String, String)> {
    if architectures.iter().any(|a| rules.user_architectures.contains(a)) {
        return None;
    }
    match serving(architectures, model_type, remote_config) {
        Serving::Refused { message, fix } => Some((message, fix)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(a: &[&str], mt: Option<&str>) -> Serving {
        serving(&a.iter().map(|x| x.to_string()).collect::<Vec<_>>(), mt, false)
    }

    #[test]
    fn resolves_as_vllm_does() {
        assert!(matches!(s(&["Qwen3MoeForCausalLM"], Some("qwen3_moe")), Serving::Native { .. }));
        // A renamed architecture over a model type transformers knows: not registered, no such
        // transformers class.
        let r = s(&["AcmeMoeForCausalLM"], Some("qwen3_moe"));
        assert!(r.refused(), "{r:?}");
        // An unknown model type stops at the config.
        match s(&["AcmeMoeForCausalLM"], Some("acme_moe")) {
            Serving::Refused { message, .. } => {
                assert!(message.contains("model type `acme_moe` but Transformers does not recognize"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // GPTBigCode: vLLM 0.33 registers it as its Transformers backend class.
        assert!(matches!(s(&["GPTBigCodeForCausalLM"], Some("gpt_bigcode")), Serving::Native { .. }));
        // A pooling variant of a registered base, under a name transformers has no class for.
        assert_eq!(
            s(&["Qwen3ForRewardModeling"], Some("qwen3")),
            Serving::AsBase { arch: "Qwen3ForRewardModeling".into(), base: "Qwen3ForCausalLM".into() }
        );
        // Remote code.
        assert!(matches!(
            serving(&["InternLM2ForCausalLM".to_string()], Some("internlm2"), true),
            Serving::RemoteCode { .. }
        ));
        assert_eq!(s(&[], Some("llama")), Serving::NoArchitecture);
    }
}
