//! One ROS 2 message off the bus or out of a bag (CDR with its encapsulation header),
//! decoded as a `ros2` source decodes it: selector byte = (type, sensor), then the
//! serialized message. Seeds: tests/fixtures/ros2/*.cdr (rosbags).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensebind::modality::Sensor;
use sensebind::sources::ros2::convert::{self, AudioFormat, SOURCE_TYPES};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let t = SOURCE_TYPES[(sel % 5) as usize];
    let sensor = Sensor::ALL[((sel / 5) % 5) as usize];
    let limits = sensebind::sources::ImageLimits::new(1024, 20.0);
    let _ = convert::sensor_of_message(t, body);
    if let Ok(d) = convert::message(t, body, sensor, AudioFormat::default(), limits) {
        let _ = d.data.check_size();
    }
});
