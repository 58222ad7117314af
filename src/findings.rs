//! Findings: the single vocabulary every check reports in.
//!
//! A finding is plain data `{code, severity, file, tensor, message, hint}`. Codes are stable strings
//! (they are part of the `--json` schema); each code has one default severity and one hint, kept
//! together in [`CODES`] so the list in the README can be checked against it.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One row of the code table: the stable code, its severity and the generic hint.
pub struct CodeInfo {
    pub code: &'static str,
    pub severity: Severity,
    pub hint: &'static str,
}

macro_rules! codes {
    ($( $ident:ident = $code:literal, $sev:ident, $hint:literal; )*) => {
        /// Stable finding codes. The string form is what `--json` carries.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $( $ident, )* }

        /// Every code with its severity and hint, in declaration order.
        pub const CODES: &[CodeInfo] = &[
            $( CodeInfo { code: $code, severity: Severity::$sev, hint: $hint }, )*
        ];

        impl Code {
            pub fn info(self) -> &'static CodeInfo {
                &CODES[self as usize]
            }
            pub fn as_str(self) -> &'static str { self.info().code }
        }
    };
}

codes! {
    // --- files and shards -------------------------------------------------------------------
    FileEmpty = "file-empty", Error, "The file has no bytes: the download or copy did not finish. Download it again.";
    HeaderTooSmall = "header-too-small", Error, "A safetensors file starts with an 8-byte header length; this file is shorter. Download it again.";
    LfsPointer = "lfs-pointer", Error, "This is a Git LFS pointer, not the weights: the download is incomplete. Run `git lfs pull` or download with huggingface-cli / hf.";
    HeaderTooLarge = "header-too-large", Error, "The header length is larger than the 100 MB cap every loader enforces; the file is corrupt or not safetensors.";
    HeaderPastEof = "header-past-eof", Error, "The header length points past the end of the file: the file is truncated or corrupt. Download it again.";
    HeaderNotUtf8 = "header-not-utf8", Error, "The JSON header contains bytes that are not UTF-8; the file is corrupt.";
    HeaderNotJson = "header-not-json", Error, "The header is not valid JSON; the file is corrupt or was written by a broken serializer.";
    HeaderNotObject = "header-not-object", Error, "The header must be a JSON object mapping tensor names to entries.";
    DuplicateTensor = "duplicate-tensor", Error, "The same tensor name appears twice in one header; loaders silently keep the last one. Rewrite the shard without the duplicate.";
    MetadataInvalid = "metadata-invalid", Error, "`__metadata__` must map strings to strings; loaders reject anything else.";
    TensorEntryInvalid = "tensor-entry-invalid", Error, "Each tensor entry must be an object with `dtype`, `shape` and `data_offsets`.";
    TensorFieldMissing = "tensor-field-missing", Error, "Each tensor entry needs `dtype`, `shape` and `data_offsets`.";
    TensorFieldUnknown = "tensor-field-unknown", Warning, "Loaders ignore fields other than `dtype`, `shape` and `data_offsets`; check the writer.";
    TensorFieldType = "tensor-field-type", Error, "`dtype` must be a string, `shape` and `data_offsets` arrays of non-negative integers.";
    DataOffsetsArity = "data-offsets-arity", Error, "`data_offsets` must hold exactly two integers: [begin, end).";
    DtypeUnknown = "dtype-unknown", Error, "Use one of the dtypes the safetensors format defines.";
    ShapeInvalid = "shape-invalid", Error, "Dimensions must be non-negative integers that fit in 64 bits.";
    SizeOverflow = "size-overflow", Error, "The shape's element count or byte size overflows 64 bits: the header is corrupt or hostile.";
    SubByteMisaligned = "sub-byte-misaligned", Error, "A sub-byte dtype (F4/F6) must fill a whole number of bytes.";
    OffsetsReversed = "offsets-reversed", Error, "`data_offsets` end is before begin; the header is corrupt.";
    SizeMismatch = "size-mismatch", Error, "The byte range must equal shape x dtype size; the header is corrupt.";
    TensorOverlap = "tensor-overlap", Error, "Two tensors share bytes; loaders reject this (it is also a known polyglot/DoS trick).";
    DataHole = "data-hole", Error, "Bytes between tensors belong to no tensor; loaders reject such files (polyglot protection).";
    FileTruncated = "file-truncated", Error, "The file is shorter than its header says: the download is incomplete. Download it again.";
    TrailingBytes = "trailing-bytes", Error, "The file has bytes after the last tensor; loaders reject it (MetadataIncompleteBuffer).";
    ShardUnreadable = "shard-unreadable", Error, "The file could not be opened or read; check permissions and the file system.";
    NotRegularFile = "not-a-regular-file", Error, "A checkpoint file must be a regular file (or a symlink to one); this is a FIFO, device, socket or directory. Replace it with the real file.";
    FileTooLarge = "file-too-large", Error, "This JSON file is larger than any real one (config files: 64 MiB, the index: 1 GiB); it is corrupt or not what its name says.";
    // --- the index and file selection -----------------------------------------------------
    IndexNotJson = "index-not-json", Error, "model.safetensors.index.json is not valid JSON; vLLM cannot select shards. Download it again.";
    IndexInvalid = "index-invalid", Error, "The index needs a `weight_map` object mapping tensor names to shard file names.";
    IndexShardMissing = "index-shard-missing", Error, "The index names a shard that is not on disk: the download is incomplete. vLLM would fail late or load garbage.";
    IndexPathEscape = "index-path-escape", Error, "A shard path in the index leaves the checkpoint directory; refuse it.";
    IndexDuplicateKey = "index-duplicate-key", Warning, "The index's weight_map names this tensor more than once; JSON loaders keep the last. Regenerate the index.";
    IndexKeyNotInShard = "index-key-not-in-shard", Error, "The index says this tensor is in a shard whose header does not have it: a stale index or a wrong shard.";
    TensorNotInIndex = "tensor-not-in-index", Warning, "This shard tensor is not listed in the index; regenerate the index so every tensor is named.";
    TensorInTwoShards = "tensor-in-two-shards", Error, "The same tensor name is stored in two shards; vLLM would load both and the last wins. Remove one.";
    TotalSizeMismatch = "total-size-mismatch", Warning, "`metadata.total_size` disagrees with the tensor bytes in the shards: a stale or hand-edited index.";
    UnindexedSafetensors = "unindexed-safetensors", Warning, "vLLM only reads the shards named by the index; this file is ignored. Delete it or add it to the index.";
    StrayConsolidated = "stray-consolidated", Warning, "A Mistral-format consolidated*.safetensors beside HF shards makes vLLM switch to the Mistral loader or load both (vllm#4989, #40765). Remove it or pass --load-format safetensors.";
    BinIgnored = "bin-ignored", Warning, "vLLM loads *.safetensors when any exist and ignores .bin/.pt files; make sure the safetensors are complete.";
    NoWeights = "no-weights", Error, "No safetensors weights found: vLLM raises `Cannot find any model weights`.";
    PickleWeightsOnly = "pickle-weights-only", Warning, "Only PyTorch pickle weights (*.bin / *.pt): vLLM loads them through its fallback (load_format auto), but ckptpilot checks safetensors headers only, so no tensor check ran. Convert to safetensors (transformers `save_pretrained(safe_serialization=True)`) to have them checked; safetensors also load without running pickle code.";
    // --- config -----------------------------------------------------------------------------
    ConfigMissing = "config-missing", Warning, "No config.json: architecture, layer and quantization checks are skipped. vLLM needs it.";
    ConfigInvalid = "config-invalid", Error, "config.json is not a valid JSON object, or a size in it is not a usable integer (a string, zero heads); vLLM cannot start.";
    ConfigField = "config-field", Warning, "A config field has an unexpected type or value; the derived checks use a fallback.";
    TieResolved = "tie-resolved", Info, "`tie_word_embeddings` is absent; it was resolved as shown. Write it explicitly into config.json.";
    ArchitectureUnsupported = "architecture-unsupported", Error, "vLLM 0.33 neither registers this architecture nor serves it through its Transformers backend (or cannot read the config's model type): `vllm serve` stops before building anything. Register it with a plugin (`ckptpilot stub`) or, where the weights fit a class vLLM has, serve as that class with --hf-overrides.";
    FamilyClosest = "family-closest", Info, "No family names this architecture: the closest known one by the tensors it routes, the parameters it fills and the shapes that agree. `ckptpilot match` shows the candidates and the exact difference, and writes a rule file where the difference is only naming.";
    ArchitectureRemoteCode = "architecture-remote-code", Warning, "The config's model type is not in transformers and `auto_map` names its own code: vLLM reads it only with --trust-remote-code.";
    // --- structure --------------------------------------------------------------------------
    LayerMissing = "layer-missing", Error, "Decoder layers declared by num_hidden_layers have no weights: missing shards or a truncated export. vLLM would serve random weights for them.";
    LayerExtra = "layer-extra", Warning, "Layers beyond num_hidden_layers that are not declared MTP layers; vLLM raises `There is no module named …` or drops them.";
    MtpMissing = "mtp-missing", Warning, "The config declares MTP layers but the checkpoint has none: `--speculative-config` with method mtp will fail (`MTP speculative decoding layer … weights missing`). The main model still loads.";
    MtpUndeclared = "mtp-undeclared", Warning, "MTP weights are present but not declared; set num_nextn_predict_layers (or delete the weights) or vLLM may reject them (vllm#34888).";
    MtpDraftUnmapped = "mtp-draft-unmapped", Warning, "A spec-layer tensor the MTP draft model cannot place: with `--speculative-config` (method mtp) its load raises KeyError. The main model still loads.";
    MtpDraftShape = "mtp-draft-shape", Warning, "A spec-layer tensor's shape differs from the draft parameter the config implies: with `--speculative-config` (method mtp) the draft's weight loader asserts. The main model still loads.";
    MtpDraftUnfilled = "mtp-draft-unfilled", Warning, "A parameter of the MTP draft model no checkpoint tensor fills: with `--speculative-config` vLLM raises `ValueError: Following weights were not initialized from checkpoint` (norms, eh_proj) or serves the draft uninitialised memory (linear, embedding and expert weights; default_loader.py track_weights_loading), and every drafted token is rejected.";
    ExpertMissing = "expert-missing", Error, "An MoE layer is missing whole experts; vLLM would leave them uninitialised with no error.";
    ExpertProjectionMissing = "expert-projection-missing", Error, "An expert is missing a projection the others have; vLLM would leave it uninitialised with no error.";
    MoeLayerMismatch = "moe-layer-mismatch", Warning, "Layer placement of MoE vs dense MLP disagrees with the config (first_k_dense_replace / decoder_sparse_step / mlp_only_layers).";
    LmHeadMissing = "lm-head-missing", Error, "The model is not tied but has no lm_head.weight: vLLM would serve a random output projection with no error.";
    LmHeadIgnoredTied = "lm-head-ignored-tied", Warning, "Embeddings are tied, so vLLM ignores lm_head.weight; if it differs from the embedding, output differs from transformers. Set tie_word_embeddings=false if it is a real head.";
    EmbeddingRowsMismatch = "embedding-rows-mismatch", Error, "Embedding / lm_head rows must equal vocab_size, or vLLM's VocabParallelEmbedding asserts.";
    QkNormShape = "qk-norm-shape", Info, "How q_norm/k_norm are shaped decides how they shard under TP (see `ckptpilot plan`).";
    // --- quantization -----------------------------------------------------------------------
    QuantScheme = "quant-scheme", Info, "The quantization scheme vLLM will select from the config.";
    TargetUnsupported = "target-unsupported", Error, "The target cannot serve this quantization (fp8 or fp4 on Ascend A2/A3, ModelSlim's `ascend` on GPUs): it raises at startup. `plan` shows the same error; the hint names the conversion.";
    Fp8WithoutQuantConfig = "fp8-without-quant-config", Error, "fp8 tensors but no quantization_config: vLLM would cast the raw fp8 codes to the model dtype and serve garbage.";
    Fp8ScaleMissing = "fp8-scale-missing", Error, "An fp8 weight has no scale tensor; dequantizing or loading it gives wrong values with no error.";
    Fp8ScaleOrphan = "fp8-scale-orphan", Error, "A scale tensor has no weight; the checkpoint is incomplete or renamed.";
    Fp8ScaleShape = "fp8-scale-shape", Error, "The scale's shape does not fit the weight under the configured scheme (block grid is [ceil(N/bn), ceil(K/bk)]).";
    Fp8ScaleDtype = "fp8-scale-dtype", Warning, "The scale's dtype is not what the scheme expects.";
    ScaleOnUnquantized = "scale-on-unquantized", Warning, "A scale tensor sits beside a weight that is not fp8; vLLM would not expect it (KeyError in hand-written loaders).";
    IgnoredModuleQuantized = "ignored-module-quantized", Error, "A module listed as not converted (modules_to_not_convert / ignored_layers / ignore) holds fp8 weights; vLLM creates it unquantized and loads fp8 codes as values.";
    QuantCompanionMissing = "quant-companion-missing", Error, "A packed weight lacks a companion tensor its scheme requires (qzeros / scales / g_idx).";
    KvScales = "kv-scales", Info, "KV-cache scale tensors found; vLLM remaps them to `.attn.k_scale` / `.attn.v_scale`.";
    KvScaleIncomplete = "kv-scale-incomplete", Warning, "A layer has only one of k_scale / v_scale; vLLM asserts k_scale > 0 (vllm#46264) or falls back to 1.0.";
    ModelslimDescriptionName = "modelslim-description-name", Error, "vLLM-Ascend reads only quant_model_description.json (else \"ModelSlim Quantization Config Not Found\"); the older msModelSlim API names it quant_model_description_<type>.json. Rename the file.";
    ModelslimUndescribed = "modelslim-undescribed", Error, "vLLM-Ascend reads each tensor's scheme from quant_model_description.json; a tensor it does not list is loaded under no scheme. Rewrite the description with the checkpoint (msModelSlim writes both together).";
    ModelslimUndescribedMtp = "modelslim-undescribed-mtp", Warning, "The MTP layers' weights are not in quant_model_description.json: the main model never builds them, but with speculative decoding (--speculative-config) vLLM-Ascend raises KeyError building the draft model (vllm-ascend #5794). Describe them (FLOAT, or their scheme) or serve without MTP.";
    ModelslimMissing = "modelslim-missing", Error, "The description lists a tensor no shard holds: the quantized checkpoint is incomplete. Copy or download it again.";
    ModelslimScheme = "modelslim-scheme", Error, "vLLM-Ascend has no method for this scheme at this layer; quantize the layer with a scheme it serves (W8A8_DYNAMIC, W8A8, W8A16; W4A8_DYNAMIC for MoE experts) or keep it FLOAT.";
    ModelslimCompanion = "modelslim-companion", Error, "Each quantized layer needs the tensors its vLLM-Ascend method loads, in their dtypes and shapes; a missing one computes with uninitialized memory and no error. Quantize the layer again.";
    QuantUnsupported = "quant-unsupported", Info, "This scheme's companion tensors are not checked by ckptpilot yet.";
    // --- remap (reverse check) ---------------------------------------------------------------
    RemapFamily = "remap-family", Info, "The vLLM family whose loading rules the remap and its checks follow (see `ckptpilot remap`).";
    RemapFamilyInferred = "remap-family-inferred", Warning, "The architecture has no built-in rules; the closest family was inferred from the tensor names. Check the table and complete a rule file (`ckptpilot remap --emit-rules`).";
    RemapUnmapped = "remap-unmapped", Error, "A checkpoint tensor reaches no vLLM parameter: the loader raises (KeyError / `There is no module or parameter named …`) or, in some families, drops it silently. Rename it (WeightsMapper) or remove it.";
    RemapUnmappedDropped = "remap-unmapped-dropped", Warning, "A checkpoint tensor reaches no vLLM parameter and this family's loader skips it without a word: the weight is not used.";
    RemapUnfilled = "remap-unfilled", Error, "A vLLM parameter no checkpoint tensor fills: vLLM 0.33.0 does not report missing linear / embedding / expert weights and serves uninitialised memory.";
    RemapDuplicate = "remap-duplicate", Error, "Two checkpoint tensors fill the same parameter slot (param, shard, expert): the later one wins silently.";
    RemapShape = "remap-shape", Error, "A checkpoint tensor's shape differs from the parameter shape the config implies: vLLM asserts (`param_data.shape == loaded_weight.shape`) or loads a wrong slice.";
    ChecksumWritten = "checksum-written", Info, "A blake3 manifest of every file was written; check it later with `ckptpilot verify`.";
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    #[serde(serialize_with = "ser_code")]
    pub code: Code,
    pub severity: Severity,
    pub file: Option<String>,
    pub tensor: Option<String>,
    pub message: String,
    pub hint: String,
}

fn ser_code<S: serde::Serializer>(c: &Code, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.as_str())
}

impl Finding {
    /// A finding with the code's default severity and hint.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        let info = code.info();
        Finding {
            code,
            severity: info.severity,
            file: None,
            tensor: None,
            message: message.into(),
            hint: info.hint.to_string(),
        }
    }
    pub fn file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }
    pub fn tensor(mut self, tensor: impl Into<String>) -> Self {
        self.tensor = Some(tensor.into());
        self
    }
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }
}

/// Counts of findings by severity.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Tally {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
}

impl Tally {
    pub fn of(findings: &[Finding]) -> Self {
        let mut t = Tally::default();
        for f in findings {
            match f.severity {
                Severity::Error => t.errors += 1,
                Severity::Warning => t.warnings += 1,
                Severity::Info => t.infos += 1,
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for c in CODES {
            assert!(seen.insert(c.code), "duplicate code {}", c.code);
            assert!(c.code.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'));
        }
        assert_eq!(Code::FileEmpty.as_str(), "file-empty");
        assert_eq!(Code::ChecksumWritten.as_str(), "checksum-written");
    }
}
