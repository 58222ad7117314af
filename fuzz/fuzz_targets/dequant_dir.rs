#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptpilot::fuzzing::dequant_dir(data));
