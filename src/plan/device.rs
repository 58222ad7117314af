//! Device presets: the memory each accelerator reports to its runtime, and whether it computes in fp8.

use serde::Serialize;

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub name: String,
    /// Total memory, bytes, as the runtime reports it (nvidia-smi / npu-smi totals).
    pub memory_bytes: u64,
    /// Whether the device has fp8 matrix units (native fp8 checkpoints serve as they are).
    pub fp8: bool,
    pub description: String,
}

struct Preset {
    names: &'static [&'static str],
    mib: u64,
    fp8: bool,
    description: &'static str,
}

const PRESETS: &[Preset] = &[
    Preset {
        names: &["h100", "h100-80g"],
        mib: 81_559,
        fp8: true,
        description: "NVIDIA H100 80 GB HBM3 (nvidia-smi: 81559 MiB)",
    },
    Preset {
        names: &["h200", "h200-141g"],
        mib: 143_771,
        fp8: true,
        description: "NVIDIA H200 141 GB HBM3e (nvidia-smi: 143771 MiB)",
    },
    Preset {
        names: &["a100", "a100-80g"],
        mib: 81_920,
        fp8: false,
        description: "NVIDIA A100 80 GB (no fp8 units: vLLM runs fp8 checkpoints weight-only through Marlin)",
    },
    Preset {
        names: &["h20", "h20-96g"],
        mib: 97_871,
        fp8: true,
        description: "NVIDIA H20 96 GB (nvidia-smi: 97871 MiB)",
    },
    Preset {
        names: &["ascend-a2", "910b", "910b3", "atlas-800t-a2"],
        mib: 65_536,
        fp8: false,
        description: "Ascend 910B (Atlas 800T A2) 64 GB HBM (npu-smi: 65536 MB); no fp8",
    },
    Preset {
        names: &["ascend-a2-32g", "910b4"],
        mib: 32_768,
        fp8: false,
        description: "Ascend 910B4 (A2) 32 GB HBM; no fp8",
    },
    Preset {
        names: &["ascend-a3", "910c", "atlas-800t-a3"],
        mib: 65_536,
        fp8: false,
        description: "Ascend 910C die (Atlas 800T A3; each die is one device) 64 GB HBM; no fp8",
    },
];

impl Device {
    pub fn preset(name: &str) -> Option<Device> {
        let key = name.to_ascii_lowercase();
        PRESETS.iter().find(|p| p.names.contains(&key.as_str())).map(|p| Device {
            name: p.names[0].to_string(),
            memory_bytes: p.mib * MIB,
            fp8: p.fp8,
            description: p.description.to_string(),
        })
    }

    /// The preset names, for help and errors.
    pub fn preset_names() -> String {
        PRESETS.iter().map(|p| p.names[0]).collect::<Vec<_>>().join(", ")
    }

    /// A device given only by its memory; fp8 assumed present on vLLM, absent on vLLM-Ascend.
    pub fn custom(memory_bytes: u64, fp8: bool) -> Device {
        Device {
            name: "custom".into(),
            memory_bytes,
            fp8,
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
    }
}
