#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::sso_token(data));
