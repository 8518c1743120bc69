//! A PNG or JPEG file (file sources, `sensebind embed --image`), with size limits
//! checked from the header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensebind::sources::ImageLimits;

fuzz_target!(|data: &[u8]| {
    let limits = ImageLimits::new(1024, 20.0);
    if let Ok(img) = sensebind::sources::file::decode_image(data, limits, "an image") {
        assert!(img.width() <= 1024 && img.height() <= 1024);
        let _ = img.to_rgb8();
    }
});
