//! A V4L2 capture buffer of any pixel format and claimed size, converted for a
//! camera or a thermal core.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensebind::sources::pixfmt::{convert, PixelFormat, Target};

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let fmt = [
        PixelFormat::Mjpeg,
        PixelFormat::Yuyv,
        PixelFormat::Rgb3,
        PixelFormat::Grey,
        PixelFormat::Y16,
    ][(data[0] % 5) as usize];
    let target = if data[0] & 0x80 == 0 {
        Target::Camera
    } else {
        Target::Thermal
    };
    let w = u16::from_le_bytes([data[1], data[2]]) as u32 % 2048;
    let h = u16::from_le_bytes([data[3], data[4]]) as u32 % 2048;
    let limits = sensebind::sources::ImageLimits::new(1024, 20.0);
    if let Ok(frame) = convert(fmt, target, w, h, &data[5..], limits) {
        assert!(
            frame.check_size().is_ok(),
            "{fmt:?} → {target:?} gave a frame of the wrong size"
        );
    }
});
