//! An MCAP recording (`type = "mcap"` sources, `sensebind replay`): scanned for
//! channels, then read message by message and every frame decoded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensebind::sources::mcap::{frames, reader};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("sensebind-fuzz-mcap-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("input.mcap");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = reader::channels(&path);
    if let Ok(messages) = reader::Messages::open(&path) {
        for m in messages.take(10_000) {
            let Ok(m) = m else { break };
            let ch = m.channel.clone();
            if let Some((modality, _source)) = frames::parse_frame_topic(&ch.topic) {
                let _ = frames::decode_frame(
                    modality,
                    &ch.schema,
                    &ch.message_encoding,
                    m.data.into(),
                    m.log_time_ns,
                    sensebind::sources::ImageLimits::default(),
                );
            }
        }
    }
});
