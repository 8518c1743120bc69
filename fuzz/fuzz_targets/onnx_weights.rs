//! A model pack's ONNX file, as `sensebind check` weighs it (pack::weights).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sensebind::pack::weights::inspect(std::io::Cursor::new(data));
});
