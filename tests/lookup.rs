//! A lookup that asks a shard's own table first (`Checkpoint::id_near`) gives what the
//! checkpoint-wide lookup (`Checkpoint::id_of`) gives, for every name and every hint: names in the
//! hinted shard, in another shard, in none, and names stored in two shards (the later copy wins).

mod common;
use ckptpilot::Checkpoint;
use common::*;
use serde_json::json;

fn check_every_pair(dir: &std::path::Path) -> usize {
    let (ck, _) = Checkpoint::open(dir.to_str().unwrap()).unwrap();
    let ids: Vec<_> = ck.tensors_with_ids().map(|(id, t)| (id, t.entry.name.clone())).collect();
    assert!(ck.shards.len() > 1);
    let mut asked: Vec<String> = ids.iter().map(|(_, n)| n.clone()).collect();
    asked.extend(ids.iter().map(|(_, n)| format!("{n}_scale_inv")));
    asked.extend(ids.iter().filter_map(|(_, n)| n.strip_suffix("_scale_inv").map(str::to_string)));
    asked.push("not.a.tensor".into());
    let mut cross = 0;
    for name in &asked {
        let want = ck.id_of(name);
        for &(near, _) in &ids {
            assert_eq!(ck.id_near(name, near), want, "{name} near {near:?}");
            cross += usize::from(want.is_some_and(|w| w.shard_index() != near.shard_index()));
        }
    }
    cross
}

#[test]
fn near_is_id_of_for_every_name_and_hint() {
    // deepseek-fp8: four shards, fp8 weights with their scales.
    assert!(check_every_pair(&fixture("deepseek-fp8")) > 0, "some hints point at another shard");
}

#[test]
fn near_is_id_of_when_names_are_stored_twice() {
    // Shard 2 copied twice and named by the index: every one of its names is in three shards, and
    // a lookup must find the copy vLLM keeps (the last in load order), not the one at hand.
    let c = copy_fixture("deepseek-fp8");
    let d = &c.dir;
    let second = "model-00002-of-00004.safetensors";
    std::fs::copy(d.join(second), d.join("model-extra.safetensors")).unwrap();
    std::fs::copy(d.join(second), d.join("model-extra2.safetensors")).unwrap();
    edit_json(&d.join("model.safetensors.index.json"), |v| {
        let in_second: Vec<String> = v["weight_map"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, f)| f.as_str() == Some(second))
            .map(|(k, _)| k.clone())
            .collect();
        v["weight_map"][&in_second[0]] = json!("model-extra.safetensors");
        v["weight_map"][&in_second[1]] = json!("model-extra2.safetensors");
    });
    let (ck, _) = Checkpoint::open(d.to_str().unwrap()).unwrap();
    assert_eq!(ck.shards.len(), 6);
    check_every_pair(d);
}
