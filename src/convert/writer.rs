//! Writing safetensors files: the header is computed in full before any data is written, so the
//! layout (and the resume check) depends only on the plan.

use crate::checkpoint::Dtype;
use std::collections::BTreeMap;

/// One output tensor's declared layout.
#[derive(Debug, Clone, PartialEq)]
pub struct OutTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub nbytes: u64,
}

/// The exact header bytes (length prefix included) for `tensors` in this order, padded with spaces
/// to a multiple of 8 as the reference writer does, so tensor data starts 8-byte aligned.
pub fn header_bytes(tensors: &[OutTensor], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut h = String::with_capacity(64 + tensors.len() * 96);
    h.push('{');
    let mut first = true;
    if !metadata.is_empty() {
        h.push_str("\"__metadata__\":");
        h.push_str(&serde_json::to_string(metadata).expect("string map serializes"));
        first = false;
    }
    let mut off = 0u64;
    for t in tensors {
        if !first {
            h.push(',');
        }
        first = false;
        h.push_str(&serde_json::to_string(&t.name).expect("string serializes"));
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        h.push_str(&format!(
            ":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            t.dtype,
            shape.join(","),
            off,
            off + t.nbytes
        ));
        off += t.nbytes;
    }
    h.push('}');
    while h.len() % 8 != 0 {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out
}

/// Total file size for a header and its tensors.
pub fn file_len(header: &[u8], tensors: &[OutTensor]) -> u64 {
    header.len() as u64 + tensors.iter().map(|t| t.nbytes).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_the_validator() {
        let ts = vec![
            OutTensor { name: "a.weight".into(), dtype: Dtype::BF16, shape: vec![2, 3], nbytes: 12 },
            OutTensor { name: "b\"q".into(), dtype: Dtype::F32, shape: vec![], nbytes: 4 },
        ];
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let mut file = header_bytes(&ts, &meta);
        assert_eq!((file.len() - 8) % 8, 0);
        file.extend(std::iter::repeat_n(0u8, 16));
        let mut out = vec![];
        let h = crate::checkpoint::header::validate(&file, "t", &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[1].name, "b\"q");
        assert_eq!(h.metadata.unwrap()["format"], "pt");
    }
}
