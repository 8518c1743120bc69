//! An IMU CSV recording (file sources, `sensebind embed --imu`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sensebind::sources::file::parse_imu_csv(std::path::Path::new("fuzz.csv"), text);
    }
});
