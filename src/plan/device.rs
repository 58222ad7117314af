//! Device presets: the memory each accelerator reports to its runtime, and whether it computes in fp8.

pub use crate::target::Npu;
use serde::Serialize;

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub name: String,
    /// Total memory, bytes, as the runtime reports it (nvidia-smi / npu-smi totals).
    pub memory_bytes: u64,
    /// Whether native fp8 checkpoints serve as they are on this device (fp8 matrix units, and a
    /// runtime that uses them).
    pub fp8: bool,
    /// An Ascend NPU's hardware family, as vLLM-Ascend tells them apart (None: a GPU).
    pub npu: Option<Npu>,
    pub description: String,
}

struct Preset {
    names: &'static [&'static str],
    mib: u64,
    fp8: bool,
    npu: Option<Npu>,
    description: &'static str,
}

const PRESETS: &[Preset] = &[
    Preset {
        names: &["h100", "h100-80g"],
        mib: 81_559,
        fp8: true,
        npu: None,
        description: "NVIDIA H100 80 GB HBM3 (nvidia-smi: 81559 MiB)",
    },
    Preset {
        names: &["h200", "h200-141g"],
        mib: 143_771,
        fp8: true,
        npu: None,
        description: "NVIDIA H200 141 GB HBM3e (nvidia-smi: 143771 MiB)",
    },
    Preset {
        names: &["a100", "a100-80g"],
        mib: 81_920,
        fp8: false,
        npu: None,
        description: "NVIDIA A100 80 GB (no fp8 units: vLLM runs fp8 checkpoints weight-only through Marlin)",
    },
    Preset {
        names: &["h20", "h20-96g"],
        mib: 97_871,
        fp8: true,
        npu: None,
        description: "NVIDIA H20 96 GB (nvidia-smi: 97871 MiB)",
    },
    Preset {
        names: &["ascend-a2", "910b", "910b1", "910b2", "910b2c", "910b3", "atlas-800t-a2", "atlas-800i-a2"],
        mib: 65_536,
        fp8: false,
        npu: Some(Npu::A2),
        description: "Ascend 910B (Atlas 800T A2) 64 GB HBM (npu-smi: 65536 MB); no fp8",
    },
    Preset {
        names: &["ascend-a2-32g", "910b4"],
        mib: 32_768,
        fp8: false,
        npu: Some(Npu::A2),
        description: "Ascend 910B4 (A2) 32 GB HBM; no fp8",
    },
    Preset {
        names: &["ascend-a3", "910c", "910_9391", "910_9381", "910_9372", "910_9392", "910_9382", "910_9362", "atlas-800t-a3", "atlas-800i-a3"],
        mib: 65_536,
        fp8: false,
        npu: Some(Npu::A3),
        description: "Ascend 910C die (Atlas 800T A3; each die is one device) 64 GB HBM; no fp8",
    },
    // Ascend 310P (vLLM-Ascend's _310P: its own ModelSlim registry, W8A8S / W8A8SC only there). 24 GB
    // LPDDR4X per 310P3 chip as announced (an Atlas 300I Duo card holds two): override with
    // --device-memory with the total npu-smi reports.
    Preset {
        names: &["ascend-310p", "310p", "310p3", "atlas-300i-duo", "atlas-300i-pro"],
        mib: 24_576,
        fp8: false,
        npu: Some(Npu::P310),
        description: "Ascend 310P3 24 GB LPDDR4X per chip as announced (not an npu-smi total: override with --device-memory); no fp8; vLLM-Ascend's 310P ModelSlim registry (W8A8, W8A8_DYNAMIC, W8A8S, W8A8SC)",
    },
    // Ascend 950 (vLLM-Ascend's A5). The capacities are Huawei's announced HBM per chip, not an
    // npu-smi total (none is on record here): pass --device-memory with the total npu-smi reports.
    // fp8: false, because vLLM-Ascend 182b75ea84 serves no native fp8 checkpoint on any NPU
    // (vllm_ascend/quantization/fp8_config.py :: AscendFp8Config.get_quant_method raises
    // NotImplementedError); A5 runs fp8 and MX only through the ModelSlim schemes that need it.
    Preset {
        names: &["ascend-950pr", "950pr", "ascend950pr"],
        mib: 131_072,
        fp8: false,
        npu: Some(Npu::A5),
        description: "Ascend 950PR (vLLM-Ascend A5) 128 GB HBM as announced (not an npu-smi total: override with --device-memory); MX / FP8 ModelSlim schemes",
    },
    Preset {
        names: &["ascend-950dt", "950dt", "ascend950dt", "ascend-950"],
        mib: 147_456,
        fp8: false,
        npu: Some(Npu::A5),
        description: "Ascend 950DT (vLLM-Ascend A5) 144 GB HBM as announced (not an npu-smi total: override with --device-memory); MX / FP8 ModelSlim schemes",
    },
];

impl Device {
    pub fn preset(name: &str) -> Option<Device> {
        let key = name.to_ascii_lowercase();
        PRESETS.iter().find(|p| p.names.contains(&key.as_str())).map(|p| Device {
            name: p.names[0].to_string(),
            memory_bytes: p.mib * MIB,
            fp8: p.fp8,
            npu: p.npu,
            description: p.description.to_string(),
        })
    }

    /// The preset names, for help and errors.
    pub fn preset_names() -> String {
        PRESETS.iter().map(|p| p.names[0]).collect::<Vec<_>>().join(", ")
    }

    /// A device given only by its memory; fp8 assumed present on vLLM, absent on vLLM-Ascend.
    pub fn custom(memory_bytes: u64, fp8: bool, npu: Option<Npu>) -> Device {
        Device {
            name: "custom".into(),
            memory_bytes,
            fp8,
            npu,
            description: format!("{} of device memory (--device-memory)", crate::ui::bytes(memory_bytes)),
        }
    }
}

/// Parse a byte size: `64GiB`, `80GB`, `65536MiB`, `1.5TiB`, or a plain byte count.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        // A bare number is no size: `--device-memory 24` meant 24 GiB, not 24 bytes.
        "" => return None,
        "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => (1u64 << 30) as f64,
        "gb" => 1e9,
        "t" | "tib" => (1u64 << 40) as f64,
        "tb" => 1e12,
        _ => return None,
    };
    let bytes = v * mult;
    (0.0..1e18).contains(&bytes).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_presets() {
        assert_eq!(parse_size("64GiB"), Some(64 << 30));
        assert_eq!(parse_size("80GB"), Some(80_000_000_000));
        assert_eq!(parse_size("1.5 GiB"), Some(3 << 29));
        assert_eq!(parse_size("12x"), None);
        assert_eq!(parse_size("24"), None, "a unit is required");
        assert_eq!(parse_size("24B"), Some(24));
        assert_eq!(Device::preset("H200").unwrap().memory_bytes, 143_771 * MIB);
        assert!(!Device::preset("910b").unwrap().fp8);
        assert!(Device::preset("tpu").is_none());
        let a5 = Device::preset("ascend-950pr").unwrap();
        assert_eq!((a5.npu, a5.fp8), (Some(Npu::A5), false));
        assert_eq!(Device::preset("910_9391").unwrap().npu, Some(Npu::A3));
        assert_eq!(Device::preset("h100").unwrap().npu, None);
    }
}
