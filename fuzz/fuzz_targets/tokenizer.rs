//! Query text into the CLIP tokenizer (what the text encoder is fed).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensebind::preprocess::text::TextPrep;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static PREP: OnceLock<TextPrep> = OnceLock::new();
    let prep = PREP.get_or_init(TextPrep::new);
    let _ = prep.input(&String::from_utf8_lossy(data));
});
