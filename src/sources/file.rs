//! Replay of recordings: WAV audio, folders of PNG/JPEG frames, 16-bit PNG depth and
//! thermal frames, IMU CSV. Paced in real time or as fast as possible, optionally
//! looped (timestamps keep increasing across loops).

use super::{
    key_error, parse_keys, DriverConfig, Frame, FrameData, ImageLimits, ImuSample, Nanos, Pacer, Source,
    SourceConfigError, SourceContext, SourceError, SourceInfo, StopFlag, StreamInfo,
};
use crate::clock::{Clock, ReplayClock};
use crate::ident::clip;
use crate::modality::Sensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    Realtime,
    Fast,
}

/// The latest `start_ns` (2^62 ns, year 2116): times on the recording's axis stay far
/// from `i64::MAX` however long it loops.
pub const MAX_START_NS: i64 = 1 << 62;

/// `type = "file"` keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub sensor: Sensor,
    pub path: String,
    #[serde(default = "default_fps")]
    pub fps: f64,
    #[serde(default = "default_pace")]
    pub pace: Pace,
    #[serde(rename = "loop", default)]
    pub looped: bool,
    #[serde(default = "default_chunk_ms")]
    pub chunk_ms: u32,
    /// Recording time of the first frame; -1: now, aligned to the window grid.
    #[serde(default = "default_start")]
    pub start_ns: i64,
}

fn default_fps() -> f64 {
    30.0
}
fn default_pace() -> Pace {
    Pace::Realtime
}
fn default_chunk_ms() -> u32 {
    20
}
fn default_start() -> i64 {
    -1
}

impl FileConfig {
    /// A fast, unlooped replay of `path` starting at recording time `start_ns`.
    pub fn fast(sensor: Sensor, path: &Path, start_ns: i64) -> Self {
        FileConfig {
            sensor,
            path: path.display().to_string(),
            fps: default_fps(),
            pace: Pace::Fast,
            looped: false,
            chunk_ms: default_chunk_ms(),
            start_ns,
        }
    }
}

/// Parse `[sources.<id>]` keys of `type = "file"`.
pub fn parse(id: &str, keys: toml::Table) -> Result<Box<dyn DriverConfig>, SourceConfigError> {
    let c: FileConfig = parse_keys(id, keys)?;
    if c.path.is_empty() {
        return Err(key_error(id, "path", "expected the recording's path"));
    }
    if !(c.fps.is_finite() && c.fps > 0.0 && c.fps <= 10_000.0) {
        return Err(key_error(
            id,
            "fps",
            format!("expected frames per second in (0, 10000], got {}", c.fps),
        ));
    }
    if !(1..=1000).contains(&c.chunk_ms) {
        return Err(key_error(
            id,
            "chunk_ms",
            format!("expected 1..=1000 ms, got {}", c.chunk_ms),
        ));
    }
    if !(-1..=MAX_START_NS).contains(&c.start_ns) {
        return Err(key_error(
            id,
            "start_ns",
            format!(
                "expected -1 (now) or a time in 0..={MAX_START_NS} ns, got {}",
                c.start_ns
            ),
        ));
    }
    Ok(Box::new(c))
}

impl DriverConfig for FileConfig {
    fn build(&self, ctx: &SourceContext) -> Result<Box<dyn Source>, SourceError> {
        let start = if self.start_ns < 0 { ctx.epoch_ns } else { self.start_ns };
        Ok(build(self, start, ctx.image_limits, ctx.stop.clone()))
    }
    fn default_queue(&self) -> usize {
        super::default_queue_for(self.sensor)
    }
    fn default_when_full(&self) -> crate::edge::WhenFull {
        super::default_when_full_for(self.pace == Pace::Fast)
    }
}

/// Build the file source for `cfg.sensor`; its recording starts at `start_ns`.
pub fn build(cfg: &FileConfig, start_ns: Nanos, limits: ImageLimits, stop: StopFlag) -> Box<dyn Source> {
    let path = PathBuf::from(&cfg.path);
    let sensor = cfg.sensor;
    let inner: Box<dyn Replay> = match sensor {
        Sensor::Camera | Sensor::Depth | Sensor::Thermal => Box::new(FrameFolder::new(sensor, path, cfg.fps, limits)),
        Sensor::Microphone => Box::new(WavReplay::new(WavInput::Path(path), cfg.chunk_ms)),
        Sensor::Imu => Box::new(ImuCsv::new(path)),
    };
    wrap(cfg, start_ns, sensor, inner, stop)
}

/// A WAV held in memory, replayed as fast as it reads from `start_ns` (query examples).
pub fn build_wav_in_memory(bytes: Arc<[u8]>, start_ns: Nanos, stop: StopFlag) -> Box<dyn Source> {
    let cfg = FileConfig::fast(Sensor::Microphone, Path::new("memory"), start_ns);
    let inner = Box::new(WavReplay::new(WavInput::Memory(bytes), cfg.chunk_ms));
    wrap(&cfg, start_ns, Sensor::Microphone, inner, stop)
}

fn wrap(cfg: &FileConfig, start_ns: Nanos, sensor: Sensor, inner: Box<dyn Replay>, stop: StopFlag) -> Box<dyn Source> {
    Box::new(FileSource {
        sensor,
        inner,
        pace: cfg.pace,
        looped: cfg.looped,
        epoch_ns: start_ns,
        catch_up: cfg.start_ns < 0,
        loop_offset_ns: 0,
        pacer: None,
        clock: ReplayClock::new(),
        stop,
    })
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
    /// `epoch_ns` lies on the realtime axis (start "now"): a paced replay catches up.
    catch_up: bool,
    loop_offset_ns: Nanos,
    pacer: Option<Pacer>,
    clock: Arc<ReplayClock>,
    stop: StopFlag,
}

impl Source for FileSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: self.inner.describe(),
            streams: vec![StreamInfo {
                modality: self.sensor.modality(),
                nominal_rate_hz: self.inner.rate_hz(),
            }],
        }
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.inner.open()?;
        if self.pace == Pace::Realtime && self.pacer.is_none() {
            self.pacer = Some(Pacer::new(
                self.clock.clone(),
                self.epoch_ns,
                self.catch_up,
                self.stop.clone(),
            ));
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let mut item = self.inner.next()?;
        if item.is_none() && self.looped {
            let d = self.inner.duration_ns();
            if d > 0 {
                self.loop_offset_ns = self.loop_offset_ns.saturating_add(d);
                self.inner.rewind();
                item = self.inner.next()?;
            }
        }
        let Some((rel, data)) = item else { return Ok(None) };
        let t_ns = self.epoch_ns.saturating_add(self.loop_offset_ns).saturating_add(rel);
        if let Some(p) = &self.pacer {
            if !p.wait_until(t_ns) {
                return Ok(None);
            }
        }
        self.clock.advance(t_ns);
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
    limits: ImageLimits,
    names: FolderNames,
    next: usize,
}

impl FrameFolder {
    fn new(sensor: Sensor, dir: PathBuf, fps: f64, limits: ImageLimits) -> Self {
        let allow_jpeg = sensor == Sensor::Camera;
        FrameFolder {
            sensor,
            names: FolderNames::new(dir.clone(), allow_jpeg, NAME_BATCH),
            dir,
            fps,
            limits,
            next: 0,
        }
    }
}

/// Names of a folder's frames read per scan: memory for a folder of a million frames
/// is that of this many names, not a million.
const NAME_BATCH: usize = 4096;

/// A folder's image files in name order, listed a batch at a time: each scan keeps
/// only the `batch` smallest names after the last one handed out.
struct FolderNames {
    dir: PathBuf,
    allow_jpeg: bool,
    batch: usize,
    queue: std::collections::VecDeque<PathBuf>,
    /// The last name handed out (the next scan starts after it).
    last: Option<std::ffi::OsString>,
    /// Image files in the folder at the last full scan.
    count: usize,
    /// No name after `queue` is left in the folder.
    exhausted: bool,
}

impl FolderNames {
    fn new(dir: PathBuf, allow_jpeg: bool, batch: usize) -> Self {
        FolderNames {
            dir,
            allow_jpeg,
            batch: batch.max(1),
            queue: Default::default(),
            last: None,
            count: 0,
            exhausted: false,
        }
    }

    fn is_image(&self, p: &Path) -> bool {
        let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        matches!(ext.as_deref(), Some("png")) || (self.allow_jpeg && matches!(ext.as_deref(), Some("jpg" | "jpeg")))
    }

    /// Read the folder: count its images and keep the next `batch` names after `last`.
    fn scan(&mut self) -> Result<(), SourceError> {
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| open_err(&self.dir, format!("expected a folder of image frames: {e}")))?;
        let mut heap = std::collections::BinaryHeap::new();
        let mut count = 0;
        for e in rd.flatten() {
            let name = e.file_name();
            if !self.is_image(Path::new(&name)) {
                continue;
            }
            count += 1;
            if self.last.as_ref().is_some_and(|l| name <= *l) {
                continue;
            }
            if heap.len() < self.batch {
                heap.push(name);
            } else if heap.peek().is_some_and(|top| name < *top) {
                heap.pop();
                heap.push(name);
            }
        }
        self.count = count;
        self.exhausted = heap.len() < self.batch;
        self.queue = heap.into_sorted_vec().into_iter().map(|n| self.dir.join(n)).collect();
        Ok(())
    }

    /// Start again from the first name; errors if the folder holds no frame.
    fn open(&mut self) -> Result<(), SourceError> {
        self.last = None;
        self.scan()?;
        if self.count == 0 {
            let kinds = if self.allow_jpeg { "PNG or JPEG" } else { "16-bit PNG" };
            return Err(open_err(&self.dir, format!("no {kinds} frames in this folder")));
        }
        Ok(())
    }

    fn next(&mut self) -> Result<Option<PathBuf>, SourceError> {
        if self.queue.is_empty() && !self.exhausted {
            self.scan()?;
        }
        let Some(p) = self.queue.pop_front() else {
            return Ok(None);
        };
        self.last = p.file_name().map(|n| n.to_os_string());
        Ok(Some(p))
    }
}

/// Decode an image file whose header declares a size within `limits` (a tiny PNG can
/// declare 20000×20000 pixels: the decoder refuses it before allocating).
fn checked_decode(path: &Path, limits: ImageLimits, what: &str) -> Result<image::DynamicImage, SourceError> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, format!("expected {what}: {e}")))?;
    decode_image(&bytes, limits, what).map_err(|e| bad(path, e))
}

/// Decode an image held in memory (PNG or JPEG, format guessed from its bytes),
/// checking its size against `limits` from the header, before any pixel is decoded.
pub fn decode_image(bytes: &[u8], limits: ImageLimits, what: &str) -> Result<image::DynamicImage, String> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        // JPEG: strictly (a truncated or lying file is refused, not filled grey).
        let (w, h, rgb) = super::pixfmt::decode_jpeg_rgb(bytes, limits).map_err(|e| format!("expected {what}: {e}"))?;
        let img = image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| format!("expected {what}: bad JPEG size"))?;
        return Ok(image::DynamicImage::ImageRgb8(img));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("expected {what}: {e}"))?;
    // The side and the decoded size are checked from the header, before anything is
    // allocated: a small PNG may declare 8192² pixels of 16-bit RGBA (512 MiB).
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_decoded_bytes);
    reader.limits(l);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => format!(
            "image larger than `limits.max_image_side` = {} pixels, or needing more than {} bytes to decode (an RGB image of that side, or `limits.max_window_bytes`)",
            limits.max_side, limits.max_decoded_bytes
        ),
        e => format!("expected {what}: {e}"),
    })?;
    limits.check(img.width(), img.height())?;
    Ok(img)
}

/// Decode an image file into RGB8 (its size checked against `limits` first).
pub fn load_rgb(path: &Path, limits: ImageLimits) -> Result<FrameData, SourceError> {
    let img = checked_decode(path, limits, "a PNG or JPEG image")?;
    let rgb = img.to_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(FrameData::Rgb8 {
        width,
        height,
        data: rgb.into_raw(),
    })
}

/// Decode a 16-bit single-channel PNG (its size checked against `limits` first).
pub fn load_gray16(path: &Path, limits: ImageLimits) -> Result<(u32, u32, Vec<u16>), SourceError> {
    let img = checked_decode(path, limits, "a 16-bit grayscale PNG")?;
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
        self.next = 0;
        self.names.open()
    }
    fn next(&mut self) -> Result<Option<(Nanos, FrameData)>, SourceError> {
        let Some(path) = self.names.next()? else {
            return Ok(None);
        };
        let i = self.next;
        self.next += 1;
        let rel = (i as f64 * 1e9 / self.fps).round() as Nanos;
        let data = match self.sensor {
            Sensor::Camera => load_rgb(&path, self.limits)?,
            Sensor::Depth => {
                let (width, height, data) = load_gray16(&path, self.limits)?;
                FrameData::Depth16 { width, height, data }
            }
            _ => {
                let (width, height, data) = load_gray16(&path, self.limits)?;
                FrameData::Thermal16 { width, height, data }
            }
        };
        Ok(Some((rel, data)))
    }
    fn duration_ns(&self) -> Nanos {
        (self.names.count as f64 * 1e9 / self.fps).round() as Nanos
    }
    fn rewind(&mut self) {
        self.next = 0;
        self.names.last = None;
        self.names.queue.clear();
        self.names.exhausted = false;
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

/// Where a WAV comes from: a file (streamed, re-opened to loop) or bytes held in
/// memory (a query example: decoded in place, never written to a file).
#[derive(Clone)]
pub enum WavInput {
    Path(PathBuf),
    Memory(Arc<[u8]>),
}

impl WavInput {
    fn describe(&self) -> String {
        match self {
            WavInput::Path(p) => p.display().to_string(),
            WavInput::Memory(b) => format!("a WAV of {} bytes in memory", b.len()),
        }
    }
    fn open_err(&self, reason: impl ToString) -> SourceError {
        SourceError::Open {
            what: self.describe(),
            reason: reason.to_string(),
        }
    }
    fn bad(&self, reason: impl ToString) -> SourceError {
        SourceError::BadData {
            what: self.describe(),
            reason: reason.to_string(),
        }
    }
}

/// Why a WAV stream could not be read: its header, or its data.
#[derive(Debug)]
pub enum WavError {
    Header(String),
    Data(String),
}

type WavRead = Box<dyn std::io::Read + Send>;

/// An open WAV, read a chunk at a time (memory independent of the file's length).
pub struct WavStream {
    reader: hound::WavReader<WavRead>,
    pub sample_rate: u32,
    pub channels: u16,
    /// Frames the header declares (a truncated file holds fewer).
    pub frames: u64,
    /// Integer samples: 1 / 2^(bits-1); `None` for 32-bit float.
    int_scale: Option<f32>,
}

impl WavStream {
    /// Open and check a WAV header (integer 8–32 bit or 32-bit float).
    pub fn open(r: impl std::io::Read + Send + 'static) -> Result<WavStream, WavError> {
        let reader = hound::WavReader::new(Box::new(r) as WavRead)
            .map_err(|e| WavError::Header(format!("expected a WAV file: {e}")))?;
        let spec = reader.spec();
        if spec.channels == 0 || spec.sample_rate == 0 {
            return Err(WavError::Header(
                "WAV header has 0 channels or a 0 Hz sample rate".into(),
            ));
        }
        let int_scale = match spec.sample_format {
            hound::SampleFormat::Float => None,
            hound::SampleFormat::Int => {
                if !(1..=32).contains(&spec.bits_per_sample) {
                    return Err(WavError::Header(format!(
                        "WAV header has {} bits per sample",
                        spec.bits_per_sample
                    )));
                }
                Some(1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32)
            }
        };
        Ok(WavStream {
            frames: reader.duration() as u64,
            reader,
            sample_rate: spec.sample_rate,
            channels: spec.channels,
            int_scale,
        })
    }

    /// Up to `frames` more frames (interleaved, normalised) appended to `out`: the
    /// number read (0 at the end), or why the data stopped (what was read stays in `out`).
    pub fn read(&mut self, frames: usize, out: &mut Vec<f32>) -> Result<usize, WavError> {
        let want = frames.saturating_mul(self.channels as usize);
        let before = out.len();
        let err = match self.int_scale {
            Some(scale) => {
                let mut it = self.reader.samples::<i32>();
                read_into(&mut it, want, out, |v| v as f32 * scale)
            }
            None => {
                let mut it = self.reader.samples::<f32>();
                read_into(&mut it, want, out, |v| v)
            }
        };
        // Whole frames only: a frame cut by the end of the data is dropped.
        let got = (out.len() - before) / self.channels as usize;
        out.truncate(before + got * self.channels as usize);
        match err {
            Some(e) => Err(WavError::Data(format!("WAV data unreadable: {e}"))),
            None => Ok(got),
        }
    }
}

fn read_into<T, I: Iterator<Item = hound::Result<T>>>(
    it: &mut I,
    want: usize,
    out: &mut Vec<f32>,
    f: impl Fn(T) -> f32,
) -> Option<hound::Error> {
    for _ in 0..want {
        match it.next() {
            Some(Ok(v)) => out.push(f(v)),
            Some(Err(e)) => return Some(e),
            None => break,
        }
    }
    None
}

/// Open a WAV from a file or memory.
pub fn open_wav(input: &WavInput) -> Result<WavStream, SourceError> {
    let r: WavRead = match input {
        WavInput::Path(p) => {
            let f = std::fs::File::open(p).map_err(|e| open_err(p, format!("expected a WAV file: {e}")))?;
            Box::new(std::io::BufReader::new(f))
        }
        WavInput::Memory(b) => Box::new(std::io::Cursor::new(b.clone())),
    };
    WavStream::open(r).map_err(|e| match e {
        WavError::Header(e) | WavError::Data(e) => input.open_err(e),
    })
}

/// Parse a whole WAV stream (integer 8–32 bit or 32-bit float) into normalised
/// samples (tests and tools; the daemon streams with [`WavStream`]).
pub fn parse_wav(mut r: impl std::io::Read) -> Result<Wav, WavError> {
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes)
        .map_err(|e| WavError::Header(format!("expected a WAV file: {e}")))?;
    let mut s = WavStream::open(std::io::Cursor::new(bytes))?;
    let mut samples = Vec::new();
    while s.read(1 << 16, &mut samples)? > 0 {}
    Ok(Wav {
        sample_rate: s.sample_rate,
        channels: s.channels,
        samples,
    })
}

struct WavReplay {
    input: WavInput,
    chunk_ms: u32,
    stream: Option<WavStream>,
    /// Frames handed out since the start of this pass.
    pos: u64,
    /// Frames the last full pass held (the file's true length, for looping).
    length: Option<u64>,
    /// The data stopped with this error: reported once, then the pass ends.
    failed: Option<SourceError>,
    ended: bool,
}

impl WavReplay {
    fn new(input: WavInput, chunk_ms: u32) -> Self {
        WavReplay {
            input,
            chunk_ms: chunk_ms.max(1),
            stream: None,
            pos: 0,
            length: None,
            failed: None,
            ended: false,
        }
    }
}

impl Replay for WavReplay {
    fn describe(&self) -> String {
        format!("WAV {} in {} ms chunks", self.input.describe(), self.chunk_ms)
    }
    fn rate_hz(&self) -> f64 {
        1000.0 / self.chunk_ms as f64
    }
    fn open(&mut self) -> Result<(), SourceError> {
        if self.stream.is_none() {
            self.stream = Some(open_wav(&self.input)?);
            self.pos = 0;
            self.ended = false;
        }
        Ok(())
    }
    fn next(&mut self) -> Result<Option<(Nanos, FrameData)>, SourceError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.ended {
            return Ok(None);
        }
        self.open()?;
        let Some(w) = self.stream.as_mut() else { return Ok(None) };
        let n = ((w.sample_rate as u64 * self.chunk_ms as u64 / 1000) as usize).max(1);
        let mut samples = Vec::with_capacity(n * w.channels as usize);
        let got = match w.read(n, &mut samples) {
            Ok(got) => got,
            Err(WavError::Header(e) | WavError::Data(e)) => {
                self.failed = Some(self.input.bad(e));
                self.ended = true;
                samples.len() / w.channels as usize
            }
        };
        if got == 0 {
            self.ended = true;
            self.length = Some(self.pos);
            return match self.failed.take() {
                Some(e) => Err(e),
                None => Ok(None),
            };
        }
        let frame0 = self.pos;
        self.pos += got as u64;
        if self.ended {
            self.length = Some(self.pos);
        }
        let rel = (frame0 as i128 * 1_000_000_000 / w.sample_rate as i128) as Nanos;
        Ok(Some((
            rel,
            FrameData::Audio {
                sample_rate: w.sample_rate,
                channels: w.channels,
                samples,
            },
        )))
    }
    fn duration_ns(&self) -> Nanos {
        let Some(w) = &self.stream else { return 0 };
        let frames = self.length.unwrap_or(w.frames);
        (frames as i128 * 1_000_000_000 / w.sample_rate as i128) as Nanos
    }
    fn rewind(&mut self) {
        // Re-opened at the next read: a file is streamed again from its start.
        self.stream = None;
        self.pos = 0;
        self.ended = false;
        self.failed = None;
    }
}

// ---------------------------------------------------------------- IMU CSV

/// Timestamped IMU readings.
pub type ImuReadings = Vec<(Nanos, ImuSample)>;

/// One data line of an IMU CSV: a reading, or why the line was rejected.
pub type ImuRow = Result<(Nanos, ImuSample), String>;

/// A streamed IMU CSV: one line read at a time (memory independent of the file's
/// length); `loop` reads it again from the start.
struct ImuCsv {
    path: PathBuf,
    lines: Option<std::io::Lines<std::io::BufReader<std::fs::File>>>,
    /// Line number of the last line read (1 = the header).
    line_no: usize,
    /// Time of the first reading (the recording's zero) and the rate, from a first
    /// bounded look at the file when it is opened.
    t0: Nanos,
    rate: f64,
    /// Time of the last reading handed out in this pass.
    last_t: Nanos,
    /// `t0` and `rate` are known (the first look is done once, not at every loop).
    looked: bool,
}

/// Readings looked at to estimate an IMU CSV's rate.
const RATE_SAMPLE: usize = 512;

impl ImuCsv {
    fn new(path: PathBuf) -> Self {
        ImuCsv {
            path,
            lines: None,
            line_no: 0,
            t0: 0,
            rate: 200.0,
            last_t: 0,
            looked: false,
        }
    }

    /// The file's lines after a checked header.
    fn reopen(&self) -> Result<std::io::Lines<std::io::BufReader<std::fs::File>>, SourceError> {
        use std::io::BufRead;
        let f = std::fs::File::open(&self.path).map_err(|e| open_err(&self.path, e))?;
        let mut lines = std::io::BufReader::new(f).lines();
        let header = match lines.next() {
            Some(Ok(l)) => l,
            Some(Err(e)) => return Err(open_err(&self.path, e)),
            None => String::new(),
        };
        check_imu_header(&self.path, &header)?;
        Ok(lines)
    }
}

impl ImuCsv {
    /// A first look: the first reading's time and the rate of the first readings
    /// (read, not kept), or the whole file when it holds no reading.
    fn first_look(&mut self) -> Result<(), SourceError> {
        let (mut n, mut first, mut last) = (0usize, None, 0);
        for (i, line) in self.reopen()?.enumerate() {
            let line = line.map_err(|e| open_err(&self.path, e))?;
            if let Some(Ok((t, _))) = parse_imu_line(&self.path, i + 1, &line) {
                first.get_or_insert(t);
                last = t;
                n += 1;
                if n >= RATE_SAMPLE {
                    break;
                }
            }
        }
        let Some(t0) = first else {
            return Err(open_err(&self.path, "no IMU readings in this file"));
        };
        self.t0 = t0;
        self.rate = if n >= 2 && last > t0 {
            (n - 1) as f64 / ((last - t0) as f64 / 1e9)
        } else {
            200.0
        };
        self.looked = true;
        Ok(())
    }
}

fn check_imu_header(path: &Path, header: &str) -> Result<(), SourceError> {
    let header = header.trim().replace(' ', "");
    if header != "t_s,ax,ay,az,gx,gy,gz" {
        return Err(open_err(
            path,
            format!(
                "expected CSV header `t_s,ax,ay,az,gx,gy,gz`, found `{}`",
                clip(&header, 100)
            ),
        ));
    }
    Ok(())
}

/// One line of an IMU CSV (`n`: its 0-based index in the file): `None` for a blank or
/// `#` comment line, else a reading or why the line was rejected (`file:line: reason`,
/// the line itself clipped).
pub fn parse_imu_line(path: &Path, n: usize, line: &str) -> Option<ImuRow> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let vals: Result<Vec<f64>, _> = line.split(',').map(|v| v.trim().parse::<f64>()).collect();
    Some(match vals {
        Ok(v) if v.len() == 7 && v.iter().all(|x| x.is_finite()) && v[0].abs() < 1e9 => {
            let s = ImuSample {
                accel: [v[1] as f32, v[2] as f32, v[3] as f32],
                gyro: [v[4] as f32, v[5] as f32, v[6] as f32],
            };
            Ok(((v[0] * 1e9).round() as Nanos, s))
        }
        _ => Err(format!(
            "{}:{}: expected 7 finite numbers `t_s,ax,ay,az,gx,gy,gz` (|t_s| < 1e9), found `{}`",
            path.display(),
            n + 1,
            clip(line, 120)
        )),
    })
}

/// Parse IMU CSV text: header `t_s,ax,ay,az,gx,gy,gz`, then one reading per line.
/// Returns every data line in order: a reading, or why the line was rejected
/// (`file:line: reason`, the line itself clipped).
pub fn parse_imu_csv(path: &Path, text: &str) -> Result<Vec<ImuRow>, SourceError> {
    let mut lines = text.lines().enumerate();
    check_imu_header(path, lines.next().map(|(_, l)| l).unwrap_or_default())?;
    Ok(lines.filter_map(|(n, l)| parse_imu_line(path, n, l)).collect())
}

impl Replay for ImuCsv {
    fn describe(&self) -> String {
        format!("IMU CSV {}", self.path.display())
    }
    fn rate_hz(&self) -> f64 {
        self.rate
    }
    fn open(&mut self) -> Result<(), SourceError> {
        if self.lines.is_some() {
            return Ok(());
        }
        if !self.looked {
            self.first_look()?;
        }
        self.lines = Some(self.reopen()?);
        self.line_no = 1;
        self.last_t = self.t0;
        Ok(())
    }
    fn next(&mut self) -> Result<Option<(Nanos, FrameData)>, SourceError> {
        if self.lines.is_none() {
            self.open()?;
        }
        let Some(lines) = self.lines.as_mut() else {
            return Ok(None);
        };
        loop {
            let Some(line) = lines.next() else { return Ok(None) };
            let line = line.map_err(|e| SourceError::Read {
                what: self.path.display().to_string(),
                reason: e.to_string(),
            })?;
            let n = self.line_no;
            self.line_no += 1;
            match parse_imu_line(&self.path, n, &line) {
                None => continue,
                Some(Ok((t, s))) => {
                    self.last_t = t;
                    return Ok(Some((t - self.t0, FrameData::Imu(s))));
                }
                Some(Err(reason)) => {
                    return Err(SourceError::BadData {
                        what: "IMU CSV".into(),
                        reason,
                    })
                }
            }
        }
    }
    fn duration_ns(&self) -> Nanos {
        self.last_t - self.t0 + (1e9 / self.rate) as Nanos
    }
    fn rewind(&mut self) {
        // Read again from the start at the next read.
        self.lines = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_folder_is_listed_a_batch_at_a_time_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut names: Vec<String> = (0..23).map(|i| format!("f{:03}.png", (i * 7) % 23)).collect();
        names.push("z.JPG".into());
        for n in &names {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        names.sort();
        for batch in [1, 5, 23, 24, 1000] {
            let mut f = FolderNames::new(dir.path().to_path_buf(), true, batch);
            f.open().unwrap();
            for round in 0..2 {
                let mut got = Vec::new();
                while let Some(p) = f.next().unwrap() {
                    got.push(p.file_name().unwrap().to_string_lossy().into_owned());
                    // Never more than a batch of names held.
                    assert!(f.queue.len() < batch.max(1), "{}", f.queue.len());
                }
                assert_eq!(got, names, "batch {batch}, round {round}");
                assert_eq!(f.count, 24);
                f.open().unwrap();
            }
        }
        // Depth and thermal folders take PNGs only.
        let mut f = FolderNames::new(dir.path().to_path_buf(), false, 4);
        f.open().unwrap();
        assert_eq!(f.count, 23);
        let empty = tempfile::tempdir().unwrap();
        let e = FolderNames::new(empty.path().to_path_buf(), false, 4)
            .open()
            .unwrap_err();
        assert!(e.to_string().contains("no 16-bit PNG frames"), "{e}");
    }

    #[test]
    fn imu_csv_rejects_bad_lines_with_location() {
        let p = Path::new("imu.csv");
        let long = "9".repeat(1_000_000);
        let rows = parse_imu_csv(
            p,
            &format!("t_s,ax,ay,az,gx,gy,gz\n0,0,0,9.8,0,0,0\n0.005,1,2,x,0,0,0\n0.01,0,0,9.8,0,0,0.1\n{long}\n"),
        )
        .unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[2].as_ref().unwrap().0, 10_000_000);
        let e = rows[1].as_ref().unwrap_err();
        assert!(e.starts_with("imu.csv:3:"), "{e}");
        // A huge bad line is clipped in the message.
        assert!(rows[3].as_ref().unwrap_err().len() < 400);
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
        let cfg = FileConfig {
            chunk_ms: 100,
            ..FileConfig::fast(Sensor::Microphone, &path, 1_000)
        };
        let mut s = build(&cfg, 1_000, ImageLimits::default(), StopFlag::default());
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
        let cfg = FileConfig::fast(Sensor::Camera, Path::new("/nonexistent/frames"), 0);
        let mut s = build(&cfg, 0, ImageLimits::default(), StopFlag::default());
        let e = s.open().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/frames") && e.contains("cannot open"), "{e}");
    }

    #[test]
    fn oversized_and_thin_images_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let thin = dir.path().join("thin.png");
        image::GrayImage::new(1, 20000).save(&thin).unwrap();
        let e = load_rgb(&thin, ImageLimits::default()).unwrap_err().to_string();
        assert!(e.contains("limits.max_image_side"), "{e}");
        let strip = dir.path().join("strip.png");
        image::GrayImage::new(2000, 10).save(&strip).unwrap();
        let e = load_rgb(&strip, ImageLimits::default()).unwrap_err().to_string();
        assert!(e.contains("limits.max_aspect_ratio"), "{e}");
        assert!(load_rgb(&strip, ImageLimits::new(4096, 300.0)).is_ok());
    }

    #[test]
    fn an_imu_csv_is_streamed_and_loops_with_time_going_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imu.csv");
        let mut text = String::from("t_s,ax,ay,az,gx,gy,gz\n# a comment\n");
        for i in 0..1000 {
            text.push_str(&format!("{},0,0,9.8,0,0,0\n", 5.0 + i as f64 / 100.0));
        }
        std::fs::write(&p, text).unwrap();
        let cfg = FileConfig {
            looped: true,
            ..FileConfig::fast(Sensor::Imu, &p, 0)
        };
        let mut s = build(&cfg, 0, ImageLimits::default(), StopFlag::default());
        s.open().unwrap();
        assert!((s.info().streams[0].nominal_rate_hz - 100.0).abs() < 1e-6);
        let ts: Vec<i64> = (0..2500).map(|_| s.next_frame().unwrap().unwrap().t_ns).collect();
        // 10 ms apart, through two loops (each 10 s long: 1000 readings at 100 Hz).
        assert!(ts.windows(2).all(|w| w[1] - w[0] == 10_000_000), "{:?}", &ts[995..1005]);
        assert_eq!(ts[2000], 20_000_000_000);
        let e = build(
            &FileConfig::fast(Sensor::Imu, Path::new("/nonexistent.csv"), 0),
            0,
            ImageLimits::default(),
            StopFlag::default(),
        )
        .open()
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent.csv"), "{e}");
        std::fs::write(&p, "t_s,ax,ay,az,gx,gy,gz\nbad\n").unwrap();
        let e = build(
            &FileConfig::fast(Sensor::Imu, &p, 0),
            0,
            ImageLimits::default(),
            StopFlag::default(),
        )
        .open()
        .unwrap_err()
        .to_string();
        assert!(e.contains("no IMU readings"), "{e}");
    }

    #[test]
    fn bad_csv_lines_reach_the_runner_as_bad_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imu.csv");
        std::fs::write(&p, "t_s,ax,ay,az,gx,gy,gz\n0,0,0,9.8,0,0,0\nbad\n0.01,0,0,9.8,0,0,0\n").unwrap();
        let mut s = build(
            &FileConfig::fast(Sensor::Imu, &p, 0),
            0,
            ImageLimits::default(),
            StopFlag::default(),
        );
        s.open().unwrap();
        assert_eq!(s.next_frame().unwrap().unwrap().t_ns, 0);
        assert!(matches!(s.next_frame(), Err(SourceError::BadData { .. })));
        assert_eq!(s.next_frame().unwrap().unwrap().t_ns, 10_000_000);
        assert!(s.next_frame().unwrap().is_none());
    }
}
