//! `type = "iio"`: a Linux IIO accelerometer + gyroscope (boards without a RealSense),
//! read through the IIO buffer: the driver enables the `in_accel_{x,y,z}`,
//! `in_anglvel_{x,y,z}` and `in_timestamp` scan elements, turns the buffer on, and
//! reads fixed-size records from the character device. Each raw value becomes SI
//! units as `(raw + offset) × scale` (m/s², rad/s), with `offset` and `scale` read from
//! sysfs; the timestamp is mapped from the device's `current_timestamp_clock`.
//!
//! Keys: `device` (`iio:device0`), `sysfs_root` (`/sys/bus/iio/devices`), `dev_root`
//! (`/dev`), `rate_hz` (written to `sampling_frequency` when the device has it; also the
//! stream's nominal rate). The roots are keys so tests run the driver on a fake tree.

use super::{
    key_error, parse_keys, DriverConfig, Frame, FrameData, ImuSample, Nanos, Source, SourceConfigError, SourceContext,
    SourceError, SourceInfo, StreamInfo,
};
use crate::clock::{Clock, MonotonicClock, SystemClock};
use crate::modality::Modality;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IioConfig {
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_sysfs")]
    pub sysfs_root: String,
    #[serde(default = "default_dev")]
    pub dev_root: String,
    #[serde(default = "default_rate")]
    pub rate_hz: f64,
}

fn default_device() -> String {
    "iio:device0".into()
}
fn default_sysfs() -> String {
    "/sys/bus/iio/devices".into()
}
fn default_dev() -> String {
    "/dev".into()
}
fn default_rate() -> f64 {
    200.0
}

/// Parse `[sources.<id>]` keys of `type = "iio"`.
pub fn parse(id: &str, keys: toml::Table) -> Result<Box<dyn DriverConfig>, SourceConfigError> {
    let c: IioConfig = parse_keys(id, keys)?;
    if c.device.is_empty() || c.device.contains('/') {
        return Err(key_error(id, "device", "expected a device name such as `iio:device0`"));
    }
    if !(c.rate_hz.is_finite() && c.rate_hz > 0.0 && c.rate_hz <= 10_000.0) {
        return Err(key_error(
            id,
            "rate_hz",
            format!("expected 0 < Hz <= 10000, got {}", c.rate_hz),
        ));
    }
    Ok(Box::new(c))
}

impl DriverConfig for IioConfig {
    fn build(&self, _ctx: &SourceContext) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(Iio {
            cfg: self.clone(),
            layout: None,
            reader: None,
            clock: ClockMap::Realtime,
        }))
    }
    fn default_queue(&self) -> usize {
        super::default_queue_for(crate::modality::Sensor::Imu)
    }
}

/// The channels read, in `ImuSample` order, then the timestamp.
const CHANNELS: [&str; 7] = [
    "in_accel_x",
    "in_accel_y",
    "in_accel_z",
    "in_anglvel_x",
    "in_anglvel_y",
    "in_anglvel_z",
    "in_timestamp",
];

/// One scan element's storage, from `scan_elements/<ch>_type` (`le:s16/16>>0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanType {
    pub little_endian: bool,
    pub signed: bool,
    pub realbits: u32,
    pub storagebits: u32,
    pub shift: u32,
}

impl ScanType {
    pub fn parse(s: &str) -> Result<ScanType, String> {
        let s = s.trim();
        let err = || {
            format!(
                "expected an IIO scan type such as `le:s16/16>>0`, found `{}`",
                crate::ident::clip(s, 40)
            )
        };
        let (endian, rest) = s.split_once(':').ok_or_else(err)?;
        let little_endian = match endian {
            "le" => true,
            "be" => false,
            _ => return Err(err()),
        };
        let signed = match rest.chars().next() {
            Some('s') => true,
            Some('u') => false,
            _ => return Err(err()),
        };
        let (bits, shift) = rest[1..].split_once(">>").ok_or_else(err)?;
        // An optional repeat count (`X2`) is not used by accelerometers and gyroscopes.
        let (real, storage) = bits.split_once('/').ok_or_else(err)?;
        let realbits: u32 = real.parse().map_err(|_| err())?;
        let storagebits: u32 = storage.parse().map_err(|_| err())?;
        let shift: u32 = shift.parse().map_err(|_| err())?;
        if !matches!(storagebits, 8 | 16 | 32 | 64) || realbits == 0 || realbits + shift > storagebits {
            return Err(err());
        }
        Ok(ScanType {
            little_endian,
            signed,
            realbits,
            storagebits,
            shift,
        })
    }

    fn bytes(&self) -> usize {
        self.storagebits as usize / 8
    }

    /// The value stored at the start of `b`.
    pub fn value(&self, b: &[u8]) -> i64 {
        let n = self.bytes();
        let mut raw: u64 = 0;
        for i in 0..n {
            let byte = if self.little_endian { b[n - 1 - i] } else { b[i] };
            raw = (raw << 8) | byte as u64;
        }
        raw >>= self.shift;
        let mask = if self.realbits >= 64 {
            u64::MAX
        } else {
            (1u64 << self.realbits) - 1
        };
        raw &= mask;
        if self.signed && self.realbits < 64 && raw & (1u64 << (self.realbits - 1)) != 0 {
            (raw | !mask) as i64
        } else {
            raw as i64
        }
    }
}

/// Where each channel sits in a buffer record, and how to scale it.
#[derive(Debug, Clone)]
pub struct Layout {
    /// (byte offset, type, offset, scale) per entry of [`CHANNELS`].
    fields: Vec<(usize, ScanType, f64, f64)>,
    pub record_bytes: usize,
}

fn read_trim(p: &Path) -> Result<String, SourceError> {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(|e| SourceError::Open {
            what: p.display().to_string(),
            reason: e.to_string(),
        })
}

fn number(p: &Path) -> Result<f64, SourceError> {
    let s = read_trim(p)?;
    s.parse::<f64>().map_err(|_| SourceError::Open {
        what: p.display().to_string(),
        reason: format!("expected a number, found `{}`", crate::ident::clip(&s, 40)),
    })
}

fn write(p: &Path, v: &str) -> Result<(), SourceError> {
    std::fs::write(p, v).map_err(|e| SourceError::Open {
        what: p.display().to_string(),
        reason: format!("cannot write `{v}`: {e} (is the sensebind user in the iio/plugdev group?)"),
    })
}

impl Layout {
    /// Read the scan elements of the device at `dir`, enabling the ones we use.
    pub fn read(dir: &Path) -> Result<Layout, SourceError> {
        let scan = dir.join("scan_elements");
        let mut elems = Vec::new();
        for ch in CHANNELS {
            write(&scan.join(format!("{ch}_en")), "1")?;
            let index = number(&scan.join(format!("{ch}_index")))? as i64;
            let tpath = scan.join(format!("{ch}_type"));
            let ty = ScanType::parse(&read_trim(&tpath)?).map_err(|reason| SourceError::Open {
                what: tpath.display().to_string(),
                reason,
            })?;
            // `in_accel_x` → `in_accel`: scale and offset are shared per type or per axis.
            let kind = ch.rsplit_once('_').map_or(ch, |(k, _)| k);
            let look = |what: &str, default: f64| -> Result<f64, SourceError> {
                for name in [format!("{ch}_{what}"), format!("{kind}_{what}")] {
                    let p = dir.join(name);
                    if p.exists() {
                        return number(&p);
                    }
                }
                if ch == "in_timestamp" || what == "offset" {
                    Ok(default)
                } else {
                    Err(SourceError::Open {
                        what: dir.join(format!("{kind}_{what}")).display().to_string(),
                        reason: "missing: the driver needs it to convert raw values to SI units".into(),
                    })
                }
            };
            elems.push((index, ch, ty, look("offset", 0.0)?, look("scale", 1.0)?));
        }
        elems.sort_by_key(|e| e.0);
        // Each element is aligned to its own size; the record to the largest.
        let (mut pos, mut align) = (0usize, 1usize);
        let mut placed = Vec::new();
        for (_, ch, ty, off, scale) in elems {
            let n = ty.bytes();
            pos = pos.div_ceil(n) * n;
            placed.push((ch, (pos, ty, off, scale)));
            pos += n;
            align = align.max(n);
        }
        let record_bytes = pos.div_ceil(align) * align;
        let fields = CHANNELS
            .iter()
            .map(|c| {
                placed
                    .iter()
                    .find(|(ch, _)| ch == c)
                    .map(|(_, f)| *f)
                    .expect("every channel placed")
            })
            .collect();
        Ok(Layout { fields, record_bytes })
    }

    /// One record → (device timestamp ns, sample in SI units).
    pub fn decode(&self, rec: &[u8]) -> (Nanos, ImuSample) {
        let v: Vec<f64> = self
            .fields
            .iter()
            .map(|(pos, ty, off, scale)| (ty.value(&rec[*pos..]) as f64 + off) * scale)
            .collect();
        (
            self.fields[6].1.value(&rec[self.fields[6].0..]),
            ImuSample {
                accel: [v[0] as f32, v[1] as f32, v[2] as f32],
                gyro: [v[3] as f32, v[4] as f32, v[5] as f32],
            },
        )
    }
}

/// How device timestamps reach the daemon's axis.
enum ClockMap {
    Realtime,
    Monotonic(MonotonicClock),
}

struct Iio {
    cfg: IioConfig,
    layout: Option<Layout>,
    reader: Option<std::io::BufReader<std::fs::File>>,
    clock: ClockMap,
}

impl Iio {
    fn dir(&self) -> PathBuf {
        Path::new(&self.cfg.sysfs_root).join(&self.cfg.device)
    }
}

impl Source for Iio {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: format!(
                "IIO {} ({}) @ {} Hz",
                self.cfg.device,
                self.dir().display(),
                self.cfg.rate_hz
            ),
            streams: vec![StreamInfo {
                modality: Modality::Imu,
                nominal_rate_hz: self.cfg.rate_hz,
            }],
        }
    }

    fn clock(&self) -> Arc<dyn Clock> {
        match self.clock {
            ClockMap::Realtime => Arc::new(SystemClock),
            ClockMap::Monotonic(m) => Arc::new(m),
        }
    }

    fn open(&mut self) -> Result<(), SourceError> {
        let dir = self.dir();
        let enable = dir.join("buffer/enable");
        // Reconfiguring needs the buffer off.
        let _ = std::fs::write(&enable, "0");
        let layout = Layout::read(&dir)?;
        let freq = dir.join("sampling_frequency");
        if freq.exists() {
            write(&freq, &format!("{}", self.cfg.rate_hz))?;
        }
        self.clock = match read_trim(&dir.join("current_timestamp_clock")).ok().as_deref() {
            Some("monotonic") | Some("monotonic_raw") | Some("boottime") => ClockMap::Monotonic(MonotonicClock::new()),
            _ => ClockMap::Realtime,
        };
        write(&enable, "1")?;
        let dev = Path::new(&self.cfg.dev_root).join(&self.cfg.device);
        let f = std::fs::File::open(&dev).map_err(|e| SourceError::Open {
            what: dev.display().to_string(),
            reason: e.to_string(),
        })?;
        self.reader = Some(std::io::BufReader::new(f));
        self.layout = Some(layout);
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let (Some(layout), Some(r)) = (&self.layout, &mut self.reader) else {
            return Err(SourceError::Read {
                what: self.cfg.device.clone(),
                reason: "not open".into(),
            });
        };
        let mut rec = vec![0u8; layout.record_bytes];
        match r.read_exact(&mut rec) {
            Ok(()) => {}
            // A character device never ends; a recorded buffer file does.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => {
                return Err(SourceError::Read {
                    what: format!("{}/{}", self.cfg.dev_root, self.cfg.device),
                    reason: e.to_string(),
                })
            }
        }
        let (t, sample) = layout.decode(&rec);
        let t_ns = match self.clock {
            ClockMap::Realtime => t,
            ClockMap::Monotonic(m) => m.map(t),
        };
        Ok(Some(Frame {
            t_ns,
            data: FrameData::Imu(sample),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ClockKind;

    /// A fake IIO device: accel s16 at indexes 0-2, gyro s16 at 3-5, timestamp s64 at 6.
    fn fake_tree(root: &Path, clock: &str, records: &[([i16; 6], i64)]) {
        let dev = root.join("sys/iio:device0");
        std::fs::create_dir_all(dev.join("scan_elements")).unwrap();
        std::fs::create_dir_all(dev.join("buffer")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        for (i, ch) in CHANNELS.iter().enumerate() {
            let ty = if *ch == "in_timestamp" {
                "le:s64/64>>0"
            } else {
                "le:s16/16>>0"
            };
            std::fs::write(dev.join(format!("scan_elements/{ch}_type")), format!("{ty}\n")).unwrap();
            std::fs::write(dev.join(format!("scan_elements/{ch}_index")), format!("{i}\n")).unwrap();
            std::fs::write(dev.join(format!("scan_elements/{ch}_en")), "0\n").unwrap();
        }
        std::fs::write(dev.join("in_accel_scale"), "0.000598\n").unwrap();
        std::fs::write(dev.join("in_anglvel_scale"), "0.000133\n").unwrap();
        std::fs::write(dev.join("in_anglvel_z_offset"), "-10\n").unwrap();
        std::fs::write(dev.join("current_timestamp_clock"), format!("{clock}\n")).unwrap();
        std::fs::write(dev.join("sampling_frequency"), "100\n").unwrap();
        std::fs::write(dev.join("buffer/enable"), "0\n").unwrap();
        let mut bytes = Vec::new();
        for (v, t) in records {
            for x in v {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            bytes.extend_from_slice(&[0; 4]); // pad to the s64's alignment
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        std::fs::write(root.join("dev/iio:device0"), bytes).unwrap();
    }

    fn source(root: &Path) -> Iio {
        let keys: toml::Table = toml::from_str(&format!(
            "sysfs_root = \"{}\"\ndev_root = \"{}\"\nrate_hz = 200.0",
            root.join("sys").display(),
            root.join("dev").display()
        ))
        .unwrap();
        let c: IioConfig = parse_keys("imu0", keys).unwrap();
        Iio {
            cfg: c,
            layout: None,
            reader: None,
            clock: ClockMap::Realtime,
        }
    }

    #[test]
    fn scan_types_parse_and_decode() {
        let t = ScanType::parse("le:s12/16>>4").unwrap();
        assert_eq!((t.realbits, t.storagebits, t.shift, t.signed), (12, 16, 4, true));
        // -1 in 12 bits, shifted left by 4, little endian.
        assert_eq!(t.value(&((0xFFFu16 << 4).to_le_bytes())), -1);
        assert_eq!(ScanType::parse("be:u16/16>>0").unwrap().value(&[0x12, 0x34]), 0x1234);
        for bad in ["s16/16>>0", "le:x16/16>>0", "le:s16/24>>0", "le:s16/16", "le:s20/16>>0"] {
            assert!(ScanType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_buffer_records_in_si_units() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_tree(
            root,
            "realtime",
            &[
                ([0, 0, 16384, 100, -100, 10], 1_000_000_000),
                ([-16384, 1, 2, 0, 0, 0], 1_005_000_000),
            ],
        );
        let mut s = source(root);
        s.open().unwrap();
        let dev = root.join("sys/iio:device0");
        assert_eq!(std::fs::read_to_string(dev.join("buffer/enable")).unwrap(), "1");
        assert_eq!(
            std::fs::read_to_string(dev.join("scan_elements/in_anglvel_x_en")).unwrap(),
            "1"
        );
        assert_eq!(std::fs::read_to_string(dev.join("sampling_frequency")).unwrap(), "200");
        assert_eq!(s.layout.as_ref().unwrap().record_bytes, 24);
        let f = s.next_frame().unwrap().unwrap();
        assert_eq!(f.t_ns, 1_000_000_000);
        let FrameData::Imu(a) = f.data else { panic!() };
        assert!((a.accel[2] - 16384.0 * 0.000598).abs() < 1e-5, "{a:?}");
        assert!((a.gyro[0] - 100.0 * 0.000133).abs() < 1e-7);
        assert!((a.gyro[1] + 100.0 * 0.000133).abs() < 1e-7);
        assert!(a.gyro[2].abs() < 1e-9, "offset -10 applies to z only: {a:?}");
        let f = s.next_frame().unwrap().unwrap();
        let FrameData::Imu(b) = f.data else { panic!() };
        assert_eq!(f.t_ns, 1_005_000_000);
        assert!((b.accel[0] + 16384.0 * 0.000598).abs() < 1e-5);
        assert!(s.next_frame().unwrap().is_none(), "end of a recorded buffer");
        assert_eq!(s.clock().kind(), ClockKind::Realtime);
    }

    #[test]
    fn monotonic_stamps_are_mapped_and_missing_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mono = crate::clock::monotonic_ns();
        fake_tree(root, "monotonic", &[([0; 6], mono)]);
        let mut s = source(root);
        s.open().unwrap();
        let f = s.next_frame().unwrap().unwrap();
        assert_eq!(s.clock().kind(), ClockKind::Monotonic);
        assert!(
            (f.t_ns - crate::clock::realtime_ns()).abs() < 1_000_000_000,
            "{}",
            f.t_ns
        );
        std::fs::remove_file(root.join("sys/iio:device0/in_accel_scale")).unwrap();
        let e = source(root).open().unwrap_err().to_string();
        assert!(e.contains("in_accel_scale") && e.contains("SI units"), "{e}");
        let e = source(&root.join("nowhere")).open().unwrap_err().to_string();
        assert!(e.contains("cannot open"), "{e}");
    }
}
