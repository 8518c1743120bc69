//! A WAV file (file sources, `sensebind embed --audio`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = sensebind::sources::file::parse_wav(std::io::Cursor::new(data)) {
        assert!(w.channels > 0 && w.sample_rate > 0);
    }
});
