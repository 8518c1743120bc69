//! Replay of recordings: WAV audio, folders of PNG/JPEG frames, 16-bit PNG depth and
//! thermal frames, IMU CSV. Paced in real time or as fast as possible, optionally
//! looped (timestamps keep increasing across loops).

use super::{Frame, FrameData, ImuSample, Nanos, Pacer, Source, SourceError, SourceInfo, StopFlag};
use crate::config::{FileSourceConfig, Pace};
use crate::modality::Sensor;
use std::path::{Path, PathBuf};

/// Build the file source for `sensor`.
pub fn build(
    sensor: Sensor,
    cfg: &FileSourceConfig,
    epoch_ns: Nanos,
    stop: StopFlag,
) -> Result<Box<dyn Source>, SourceError> {
    let path = PathBuf::from(&cfg.path);
    let inner: Box<dyn Replay> = match sensor {
        Sensor::Camera | Sensor::Depth | Sensor::Thermal => Box::new(FrameFolder::new(sensor, path, cfg.fps)),
        Sensor::Microphone => Box::new(WavReplay::new(path, cfg.chunk_ms)),
        Sensor::Imu => Box::new(ImuCsv::new(path)),
    };
    Ok(Box::new(FileSource {
        sensor,
        inner,
        pace: cfg.pace,
        looped: cfg.looped,
        epoch_ns,
        loop_offset_ns: 0,
        pacer: None,
        stop,
    }))
}

/// A recording, read item by item; times are relative to the recording's start.
trait Replay: Send {
    fn describe(&self) -> String;
    fn rate_hz(&self) -> f64;
    fn open(&mut self) -> Result<(), SourceError>;
    /// Next item with its time offset in ns, `None` at the end.
    fn next(&mut self) -> Result<Option<(Nanos, FrameData)>, SourceError>;
    /// Length of the recording in ns (for looping).
    fn duration_ns(&self) -> Nanos;
    fn rewind(&mut self);
}

struct FileSource {
    sensor: Sensor,
    inner: Box<dyn Replay>,
    pace: Pace,
    looped: bool,
    epoch_ns: Nanos,
    loop_offset_ns: Nanos,
    pacer: Option<Pacer>,
    stop: StopFlag,
}

impl Source for FileSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            sensor: self.sensor,
            description: self.inner.describe(),
            nominal_rate_hz: self.inner.rate_hz(),
        }
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.inner.open()?;
        if self.pace == Pace::Realtime && self.pacer.is_none() {
            self.pacer = Some(Pacer::new(self.epoch_ns, self.stop.clone()));
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let mut item = self.inner.next()?;
        if item.is_none() && self.looped {
            let d = self.inner.duration_ns();
            if d > 0 {
                self.loop_offset_ns += d;
                self.inner.rewind();
                item = self.inner.next()?;
            }
        }
        let Some((rel, data)) = item else { return Ok(None) };
        let t_ns = self.epoch_ns + self.loop_offset_ns + rel;
        if let Some(p) = &self.pacer {
            if !p.wait_until(t_ns) {
                return Ok(None);
            }
        }
        Ok(Some(Frame { t_ns, data }))
    }
}

fn open_err(path: &Path, reason: impl ToString) -> SourceError {
    SourceError::Open {
        what: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn bad(path: &Path, reason: impl ToString) -> SourceError {
    SourceError::BadData {
        what: path.display().to_string(),
        reason: reason.to_string(),
    }
}

// ---------------------------------------------------------------- frame folders

struct FrameFolder {
    sensor: Sensor,
    dir: PathBuf,
    fps: f64,
    files: Vec<PathBuf>,
    next: usize,
}

impl FrameFolder {
    fn new(sensor: Sensor, dir: PathBuf, fps: f64) -> Self {
        FrameFolder {
            sensor,
            dir,
            fps,
            files: Vec::new(),
            next: 0,
        }
    }
}

/// List image files (png/jpg/jpeg) of a folder, sorted by name.
pub fn list_images(dir: &Path, allow_jpeg: bool) -> Result<Vec<PathBuf>, SourceError> {
    let rd = std::fs::read_dir(dir).map_err(|e| open_err(dir, format!("expected a folder of image frames: {e}")))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
            matches!(ext.as_deref(), Some("png")) || (allow_jpeg && matches!(ext.as_deref(), Some("jpg" | "jpeg")))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        let kinds = if allow_jpeg { "PNG or JPEG" } else { "16-bit PNG" };
        return Err(open_err(dir, format!("no {kinds} frames in this folder")));
    }
    Ok(files)
}

/// Decode an image file into RGB8.
pub fn load_rgb(path: &Path) -> Result<FrameData, SourceError> {
    let img = image::open(path).map_err(|e| bad(path, format!("expected a PNG or JPEG image: {e}")))?;
    let rgb = img.to_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(FrameData::Rgb8 {
        width,
        height,
        data: rgb.into_raw(),
    })
}

/// Decode a 16-bit single-channel PNG.
pub fn load_gray16(path: &Path) -> Result<(u32, u32, Vec<u16>), SourceError> {
    let img = image::open(path).map_err(|e| bad(path, format!("expected a 16-bit grayscale PNG: {e}")))?;
    match img {
        image::DynamicImage::ImageLuma16(buf) => {
            let (w, h) = buf.dimensions();
            Ok((w, h, buf.into_raw()))
        }
        other => Err(bad(
            path,
            format!("expected a 16-bit grayscale PNG, found {:?}", other.color()),
        )),
    }
}

impl Replay for FrameFolder {
    fn describe(&self) -> String {
        format!("{} frames from {} @ {} fps", self.sensor, self.dir.display(), self.fps)
    }
    fn rate_hz(&self) -> f64 {
        self.fps
    }
    fn open(&mut self) -> Result<(), SourceError> {
        self.files = list_images(&self.dir, self.sensor == Sensor::Camera)?;
        Ok(())
    }
    fn next(&mut self) -> Result<Option<(Nanos, FrameData)>, SourceError> {
        let Some(path) = self.files.get(self.next).cloned() else {
            return Ok(None);
        };
        let i = self.next;
        self.next += 1;
        let rel = (i as f64 * 1e9 / self.fps).round() as Nanos;
        let data = match self.sensor {
            Sensor::Camera => load_rgb(&path)?,
            Sensor::Depth => {
                let (width, height, data) = load_gray16(&path)?;
                FrameData::Depth16 { width, height, data }
            }
            _ => {
                let (width, height, data) = load_gray16(&path)?;
                FrameData::Thermal16 { width, height, data }
            }
        };
        Ok(Some((rel, data)))
    }
    fn duration_ns(&self) -> Nanos {
        (self.files.len() as f64 * 1e9 / self.fps).round() as Nanos
    }
    fn rewind(&mut self) {
        self.next = 0;
    }
}

// ---------------------------------------------------------------- WAV

/// A decoded WAV file: interleaved samples in [-1, 1].
#[derive(Debug, Clone)]
pub struct Wav {
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<f32>,
}

/// Read a whole WAV file (integer 8–32 bit or 32-bit float).
pub fn read_wav(path: &Path) -> Result<Wav, SourceError> {
    let reader = hound::WavReader::open(path).map_err(|e| open_err(path, format!("expected a WAV file: {e}")))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(bad(path, "WAV header has 0 channels or a 0 Hz sample rate"));
    }
    let samples: Result<Vec<f32>, hound::Error> = match spec.sample_format {
        hound::SampleFormat::Float => reader.into_samples::<f32>().collect(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect()
        }
    };
    let samples = samples.map_err(|e| bad(path, format!("WAV data unreadable: {e}")))?;
    Ok(Wav {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        samples,
    })
}

struct WavReplay {
    path: PathBuf,
    chunk_ms: u32,
    wav: Option<Wav>,
    pos: usize,
}

impl WavReplay {
    fn new(path: PathBuf, chunk_ms: u32) -> Self {
        WavReplay {
            path,
            chunk_ms: chunk_ms.max(1),
            wav: None,
            pos: 0,
        }
    }
}

impl Replay for WavReplay {
    fn describe(&self) -> String {
        format!("WAV {} in {} ms chunks", self.path.display(), self.chunk_ms)
    }
    fn rate_hz(&self) -> f64 {
        1000.0 / self.chunk_ms as f64
    }
    fn open(&mut self) -> Result<(), SourceError> {
        if self.wav.is_none() {
            self.wav = Some(read_wav(&self.path)?);
        }
        Ok(())
    }
    fn next(&mut self) -> Result<Option<(Nanos, FrameData)>, SourceError> {
        let Some(w) = &self.wav else { return Ok(None) };
        let ch = w.channels as usize;
        let frames_total = w.samples.len() / ch;
        let frame0 = self.pos;
        if frame0 >= frames_total {
            return Ok(None);
        }
        let n = ((w.sample_rate as u64 * self.chunk_ms as u64 / 1000) as usize).max(1);
        let end = (frame0 + n).min(frames_total);
        self.pos = end;
        let rel = (frame0 as i128 * 1_000_000_000 / w.sample_rate as i128) as Nanos;
        Ok(Some((
            rel,
            FrameData::Audio {
                sample_rate: w.sample_rate,
                channels: w.channels,
                samples: w.samples[frame0 * ch..end * ch].to_vec(),
            },
        )))
    }
    fn duration_ns(&self) -> Nanos {
        self.wav
            .as_ref()
            .map(|w| ((w.samples.len() / w.channels as usize) as i128 * 1_000_000_000 / w.sample_rate as i128) as Nanos)
            .unwrap_or(0)
    }
    fn rewind(&mut self) {
        self.pos = 0;
    }
}

// ---------------------------------------------------------------- IMU CSV

/// Timestamped IMU readings.
pub type ImuReadings = Vec<(Nanos, ImuSample)>;

struct ImuCsv {
    path: PathBuf,
    rows: Vec<(Nanos, ImuSample)>,
    next: usize,
}

impl ImuCsv {
    fn new(path: PathBuf) -> Self {
        ImuCsv {
            path,
            rows: Vec::new(),
            next: 0,
        }
    }
}

/// Parse IMU CSV text: header `t_s,ax,ay,az,gx,gy,gz`, then one reading per line.
/// Returns the readings and a message per rejected line (`file:line: reason`).
pub fn parse_imu_csv(path: &Path, text: &str) -> Result<(ImuReadings, Vec<String>), SourceError> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim().replace(' ', "")).unwrap_or_default();
    if header != "t_s,ax,ay,az,gx,gy,gz" {
        return Err(open_err(
            path,
            format!("expected CSV header `t_s,ax,ay,az,gx,gy,gz`, found `{header}`"),
        ));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let vals: Result<Vec<f64>, _> = line.split(',').map(|v| v.trim().parse::<f64>()).collect();
        match vals {
            Ok(v) if v.len() == 7 && v.iter().all(|x| x.is_finite()) => {
                let s = ImuSample {
                    accel: [v[1] as f32, v[2] as f32, v[3] as f32],
                    gyro: [v[4] as f32, v[5] as f32, v[6] as f32],
                };
                rows.push(((v[0] * 1e9).round() as Nanos, s));
            }
            _ => errors.push(format!(
                "{}:{}: expected 7 finite numbers `t_s,ax,ay,az,gx,gy,gz`, found `{line}`",
                path.display(),
                n + 1
            )),
        }
    }
    Ok((rows, errors))
}

impl Replay for ImuCsv {
    fn describe(&self) -> String {
        format!("IMU CSV {}", self.path.display())
    }
    fn rate_hz(&self) -> f64 {
        if self.rows.len() >= 2 {
            let span = (self.rows[self.rows.len() - 1].0 - self.rows[0].0) as f64 / 1e9;
            if span > 0.0 {
                return (self.rows.len() - 1) as f64 / span;
            }
        }
        200.0
    }
    fn open(&mut self) -> Result<(), SourceError> {
        if !self.rows.is_empty() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| open_err(&self.path, e))?;
        let (rows, errors) = parse_imu_csv(&self.path, &text)?;
        for e in errors.iter().take(10) {
            tracing::warn!(event = "source_bad_data", sensor = "imu", error = %e, "IMU line skipped");
        }
        if rows.is_empty() {
            return Err(open_err(&self.path, "no IMU readings in this file"));
        }
        self.rows = rows;
        Ok(())
    }
    fn next(&mut self) -> Result<Option<(Nanos, FrameData)>, SourceError> {
        let Some(&(t, s)) = self.rows.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        Ok(Some((t - self.rows[0].0, FrameData::Imu(s))))
    }
    fn duration_ns(&self) -> Nanos {
        match (self.rows.first(), self.rows.last()) {
            (Some(a), Some(b)) => b.0 - a.0 + (1e9 / self.rate_hz()) as Nanos,
            _ => 0,
        }
    }
    fn rewind(&mut self) {
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imu_csv_rejects_bad_lines_with_location() {
        let p = Path::new("imu.csv");
        let (rows, errs) = parse_imu_csv(
            p,
            "t_s,ax,ay,az,gx,gy,gz\n0,0,0,9.8,0,0,0\n0.005,1,2,x,0,0,0\n0.01,0,0,9.8,0,0,0.1\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].0, 10_000_000);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("imu.csv:3:"), "{}", errs[0]);
        let e = parse_imu_csv(p, "time,a\n").unwrap_err().to_string();
        assert!(e.contains("t_s,ax,ay,az,gx,gy,gz"), "{e}");
    }

    #[test]
    fn wav_roundtrip_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..8000 {
            w.write_sample((i % 100) as i16 * 100).unwrap();
            w.write_sample(-16384i16).unwrap();
        }
        w.finalize().unwrap();
        let cfg = FileSourceConfig {
            path: path.display().to_string(),
            fps: 30.0,
            pace: Pace::Fast,
            looped: false,
            chunk_ms: 100,
        };
        let mut s = build(Sensor::Microphone, &cfg, 1_000, StopFlag::default()).unwrap();
        s.open().unwrap();
        let mut n = 0;
        let mut last_t = 0;
        while let Some(f) = s.next_frame().unwrap() {
            if let FrameData::Audio { samples, channels, .. } = f.data {
                assert_eq!(channels, 2);
                assert_eq!(samples[1], -0.5);
                n += samples.len() / 2;
            }
            last_t = f.t_ns;
        }
        assert_eq!(n, 8000);
        assert_eq!(last_t, 1_000 + 900_000_000);
    }

    #[test]
    fn missing_folder_is_a_clear_open_error() {
        let cfg = FileSourceConfig {
            path: "/nonexistent/frames".into(),
            fps: 30.0,
            pace: Pace::Fast,
            looped: false,
            chunk_ms: 20,
        };
        let mut s = build(Sensor::Camera, &cfg, 0, StopFlag::default()).unwrap();
        let e = s.open().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/frames") && e.contains("cannot open"), "{e}");
    }
}
