//! `remap --json` written out: the same bytes as `serde_json::to_writer_pretty` of the report (a
//! test compares them on every fixture), made faster where the report is large. A DeepSeek-size
//! remap has ~90k rows (~90 MB of JSON): serde_json writes them a few bytes at a time through its
//! escaping loop, which took half of the command's time. Here the rows are written on every core,
//! a band at a time, each string copied whole when it holds nothing to escape.

use super::{RemapReport, Row, TpSplit};
use serde::Serialize;
use std::io::{self, Write};

/// Rows rendered per task; a wave of two such tasks per thread is written before the next is
/// rendered, so the buffers stay a few megabytes whatever the model.
const BAND: usize = 1024;

/// Write `report` as pretty JSON (no trailing newline), exactly as serde_json would.
pub fn write_report(report: &RemapReport, w: &mut dyn Write) -> io::Result<()> {
    use rayon::prelude::*;
    let mut top = Fields::new();
    top.field(w, "schema", &report.schema)?;
    top.field(w, "vllm_reference", &report.vllm_reference)?;
    top.field(w, "model", &report.model)?;
    top.field(w, "architecture", &report.architecture)?;
    top.field(w, "family", &report.family)?;
    top.field(w, "tp", &report.tp)?;
    top.field(w, "ep", &report.ep)?;
    top.field(w, "target", &report.target)?;
    top.key(w, "rows")?;
    if report.rows.is_empty() {
        w.write_all(b"[]")?;
    } else {
        w.write_all(b"[")?;
        let wave = BAND * 2 * rayon::current_num_threads().max(1);
        // One buffer per band of a wave, reused wave after wave (freed and allocated again on
        // other threads, they would not come back to the allocator in time to be reused).
        let mut bufs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (wi, rows) in report.rows.chunks(wave).enumerate() {
            let bands = rows.len().div_ceil(BAND);
            bufs.resize_with(bufs.len().max(bands), || (Vec::with_capacity(BAND * 1024), Vec::new()));
            bufs[..bands].par_iter_mut().zip(rows.par_chunks(BAND)).enumerate().for_each(
                |(bi, ((out, scratch), band))| {
                    out.clear();
                    for (i, row) in band.iter().enumerate() {
                        out.extend_from_slice(if wi + bi + i == 0 { b"\n    " } else { b",\n    " });
                        write_row(out, scratch, row);
                    }
                },
            );
            for (out, _) in &bufs[..bands] {
                w.write_all(out)?;
            }
        }
        w.write_all(b"\n  ]")?;
    }
    top.field(w, "params", &report.params)?;
    top.field(w, "findings", &report.findings)?;
    top.field(w, "counts", &report.counts)?;
    w.write_all(b"\n}")
}

/// The top-level object's fields (names of ours: nothing to escape), each value rendered by
/// serde_json and indented one level.
struct Fields {
    first: bool,
    out: Vec<u8>,
    scratch: Vec<u8>,
}

impl Fields {
    fn new() -> Fields {
        Fields { first: true, out: Vec::new(), scratch: Vec::new() }
    }

    fn key(&mut self, w: &mut dyn Write, key: &str) -> io::Result<()> {
        let sep: &[u8] = if std::mem::take(&mut self.first) { b"{\n  \"" } else { b",\n  \"" };
        w.write_all(sep)?;
        w.write_all(key.as_bytes())?;
        w.write_all(b"\": ")
    }

    fn field<T: Serialize + ?Sized>(&mut self, w: &mut dyn Write, key: &str, value: &T) -> io::Result<()> {
        self.key(w, key)?;
        self.out.clear();
        serde_value(&mut self.out, &mut self.scratch, value, 2);
        w.write_all(&self.out)
    }
}

/// A value rendered by serde_json (pretty), every line after the first indented by `indent`
/// more spaces: a raw newline in pretty JSON is always structure (strings escape theirs).
fn serde_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, scratch: &mut Vec<u8>, value: &T, indent: usize) {
    scratch.clear();
    serde_json::to_writer_pretty(&mut *scratch, value).expect("serializing to memory does not fail");
    let mut rest = &scratch[..];
    while let Some(at) = memchr::memchr(b'\n', rest) {
        out.extend_from_slice(&rest[..=at]);
        out.extend_from_slice(&SPACES[..indent]);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

const SPACES: [u8; 16] = [b' '; 16];

/// A JSON string: copied whole when nothing in it needs escaping, else as serde_json escapes it.
fn string(out: &mut Vec<u8>, s: &str) {
    if crate::checkpoint::json::plain(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("serializing to memory does not fail");
    }
}

fn uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// One row at the rows' depth (the object at 4 spaces, its fields at 6).
fn write_row(out: &mut Vec<u8>, scratch: &mut Vec<u8>, r: &Row) {
    const F: &[u8] = b",\n      ";
    out.extend_from_slice(b"{\n      \"checkpoint_name\": ");
    string(out, &r.checkpoint_name);
    out.extend_from_slice(F);
    out.extend_from_slice(b"\"shard_file\": ");
    string(out, &r.shard_file);
    out.extend_from_slice(F);
    out.extend_from_slice(b"\"dtype\": ");
    string(out, r.dtype);
    out.extend_from_slice(F);
    out.extend_from_slice(b"\"shape\": ");
    if r.shape.is_empty() {
        out.extend_from_slice(b"[]");
    } else {
        out.push(b'[');
        for (i, d) in r.shape.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\n        " } else { b",\n        " });
            uint(out, *d);
        }
        out.extend_from_slice(b"\n      ]");
    }
    out.extend_from_slice(F);
    out.extend_from_slice(b"\"param\": ");
    match &r.param {
        Some(p) => string(out, p),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(F);
    out.extend_from_slice(b"\"shard_id\": ");
    match &r.shard_id {
        None => out.extend_from_slice(b"null"),
        Some(serde_json::Value::String(s)) => string(out, s),
        Some(v) => serde_value(out, scratch, v, 6),
    }
    out.extend_from_slice(F);
    out.extend_from_slice(b"\"expert_id\": ");
    match r.expert_id {
        Some(e) => uint(out, e),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(F);
    out.extend_from_slice(b"\"partition\": ");
    match &r.partition {
        Some(p) => serde_value(out, scratch, p, 6),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(F);
    out.extend_from_slice(b"\"action\": ");
    serde_value(out, scratch, &r.action, 6);
    if let Some(reason) = &r.reason {
        out.extend_from_slice(F);
        out.extend_from_slice(b"\"reason\": ");
        string(out, reason);
    }
    if let Some(to) = &r.routed_to {
        out.extend_from_slice(F);
        out.extend_from_slice(b"\"routed_to\": ");
        string(out, to);
    }
    out.extend_from_slice(F);
    out.extend_from_slice(b"\"tp\": ");
    match &r.tp {
        TpSplit::Split { slices } if !slices.is_empty() => {
            out.extend_from_slice(b"{\n        \"kind\": \"split\",\n        \"slices\": [");
            for (i, s) in slices.iter().enumerate() {
                out.extend_from_slice(if i == 0 { b"\n          {" } else { b",\n          {" });
                out.extend_from_slice(b"\n            \"rank\": ");
                uint(out, s.rank);
                out.extend_from_slice(b",\n            \"dim\": ");
                uint(out, s.dim as u64);
                out.extend_from_slice(b",\n            \"start\": ");
                uint(out, s.start);
                out.extend_from_slice(b",\n            \"end\": ");
                uint(out, s.end);
                out.extend_from_slice(b"\n          }");
            }
            out.extend_from_slice(b"\n        ]\n      }");
        }
        tp => serde_value(out, scratch, tp, 6),
    }
    if r.unverified {
        out.extend_from_slice(F);
        out.extend_from_slice(b"\"unverified\": true");
    }
    out.extend_from_slice(b"\n    }");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Partition;
    use crate::remap::{Action, RankSlice};

    fn row() -> Row {
        Row {
            checkpoint_name: "model.layers.0.mlp.experts.3.w1.weight".into(),
            shard_file: "model-00001-of-00002.safetensors".into(),
            dtype: "BF16",
            shape: vec![16, 8].into(),
            param: Some("model.layers.0.mlp.experts.w13_weight".into()),
            shard_id: Some(serde_json::json!("w1")),
            expert_id: Some(3),
            partition: Some(Partition::Expert),
            action: Action::Expert,
            reason: None,
            routed_to: None,
            tp: TpSplit::Replicated,
            unverified: false,
            expected_shape: None,
        }
    }

    /// Every field shape a row can take, against serde_json's own pretty output of the same rows.
    #[test]
    fn rows_as_serde_writes_them() {
        let mut rows = vec![row()];
        let mut r = row();
        r.checkpoint_name = "odd \"name\"\\ with\ttab and é".into();
        r.shape = Box::default();
        r.param = None;
        r.shard_id = Some(serde_json::json!(["w1", "w3"]));
        r.expert_id = None;
        r.partition = None;
        r.action = Action::Unmapped;
        r.reason = Some("KeyError: 'x'\n".into());
        r.routed_to = Some("model.x".into());
        r.tp = TpSplit::Split {
            slices: vec![
                RankSlice { rank: 0, dim: 0, start: 0, end: 8 },
                RankSlice { rank: 1, dim: 0, start: 8, end: 16 },
            ],
        };
        r.unverified = true;
        rows.push(r);
        for tp in
            [TpSplit::ExpertOwner { rank: 3 }, TpSplit::ByLoader, TpSplit::None, TpSplit::Split { slices: vec![] }]
        {
            let mut r = row();
            r.shard_id = Some(serde_json::json!(0));
            r.tp = tp;
            rows.push(r);
        }
        // More than one band and one wave.
        while rows.len() < BAND * 2 * rayon::current_num_threads().max(1) + 3 {
            rows.push(rows[rows.len() % 6].clone());
        }
        for n in [0, 1, 2, rows.len()] {
            let report = RemapReport {
                schema: "s",
                vllm_reference: "v",
                model: "m".into(),
                architecture: None,
                family: None,
                tp: 2,
                ep: false,
                target: crate::target::Target::default(),
                rows: rows[..n].to_vec(),
                params: Vec::new(),
                findings: Vec::new(),
                counts: [("load".to_string(), 1)].into_iter().collect(),
            };
            let mut ours = Vec::new();
            write_report(&report, &mut ours).unwrap();
            let theirs = serde_json::to_vec_pretty(&report).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap(), "{n} rows");
        }
    }
}
