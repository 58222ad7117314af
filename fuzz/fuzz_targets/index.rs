#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptkit::fuzzing::index(data));
