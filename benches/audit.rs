//! Criterion benches of the audit's hot paths: header validation and the whole audit of a fixture.
//! Whole-process comparisons against Python live in `benches/audit_compare.py`.

use ckptpilot::checkpoint::header;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;

/// A shard-sized header with DeepSeek-V3 expert names (575 entries, as in the real checkpoint).
fn synthetic_shard() -> Vec<u8> {
    let mut h = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut off = 0u64;
    for e in 0..96 {
        for p in ["gate_proj", "up_proj", "down_proj"] {
            let name = format!("model.layers.7.mlp.experts.{e}.{p}");
            h.push_str(&format!(
                ",\"{name}.weight\":{{\"dtype\":\"F8_E4M3\",\"shape\":[16,16],\"data_offsets\":[{off},{}]}}",
                off + 256
            ));
            off += 256;
            h.push_str(&format!(
                ",\"{name}.weight_scale_inv\":{{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[{off},{}]}}",
                off + 4
            ));
            off += 4;
        }
    }
    h.push('}');
    let mut v = (h.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(h.as_bytes());
    v.resize(v.len() + off as usize, 0);
    v
}

fn bench_header(c: &mut Criterion) {
    let buf = synthetic_shard();
    let n = u64::from_le_bytes(buf[..8].try_into().unwrap());
    let mut g = c.benchmark_group("header");
    g.throughput(Throughput::Bytes(n));
    g.bench_function("validate_576_entries", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            black_box(header::validate(black_box(&buf), "bench", &mut out));
        })
    });
    g.finish();
}

fn bench_audit(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/deepseek-fp8");
    let input = dir.to_str().unwrap().to_string();
    c.bench_function("audit_fixture_deepseek_fp8", |b| {
        b.iter(|| {
            let (ck, f) = ckptpilot::Checkpoint::open(&input).unwrap();
            black_box(ckptpilot::audit(&input, &ck, f));
        })
    });
}

criterion_group!(benches, bench_header, bench_audit);
criterion_main!(benches);
