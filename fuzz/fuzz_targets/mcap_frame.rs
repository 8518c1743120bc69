//! One recorded frame message (foxglove.RawImage / CompressedImage / RawAudio,
//! sensebind.Imu), as a replay decodes it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensebind::sources::mcap::frames;
use sensebind::Modality;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let modality = Modality::SENSED[(sel % 5) as usize];
    let schema = [
        frames::RAW_IMAGE,
        frames::COMPRESSED_IMAGE,
        frames::RAW_AUDIO,
        frames::IMU,
    ][((sel / 5) % 4) as usize];
    let encoding = frames::message_encoding(schema);
    let limits = sensebind::sources::ImageLimits::new(1024, 20.0);
    if let Ok(f) = frames::decode_frame(modality, schema, encoding, body.to_vec().into(), 1_000, limits) {
        let _ = f.data.check_size();
    }
});
