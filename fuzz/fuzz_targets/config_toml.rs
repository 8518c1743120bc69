//! A user config file: merged over the defaults and validated.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sensebind::config::Config::from_toml_str("fuzz.toml", text);
    }
});
