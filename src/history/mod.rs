//! History: every published embedding (each stream and `fused`) of the last
//! `history.retention`, on disk in `<state_dir>/history/`, searchable by cosine.
//!
//! **Files.** Segments `seg-<first t_end_ns>.sbh`, each covering `history.segment_s`
//! of window time: a header (`SBHIST1\n`, dimension, model name) then records, each
//! `len u32 · crc32 u32 · body` with body = seq, t_start_ns, t_end_ns (i64), target
//! (u8), source (u8 length + bytes), then the embedding as little-endian f32 exactly
//! as published. Records are appended with one `write` each and the file is
//! fdatasync'd every `history.sync_s`: a killed process loses nothing written, a
//! power cut at most `sync_s`. A torn or corrupt tail is cut off at load (logged).
//!
//! **Bounds.** Whole segments expire: those whose newest window ended more than
//! `retention` before the newest window kept, and the oldest ones while the files
//! take more than `max_bytes` (a segment is closed at an eighth of it, so the bound
//! holds).
//!
//! **Index.** In memory, each vector's int8 codes and window (see [`index`]): a
//! search scans them and re-scores the few candidates exactly from disk.
//! Segments of another model (the pack changed) are kept until they expire, but not
//! searched.

pub mod index;
pub mod params;

use crate::modality::{Modality, Target};
use index::{Approx, Quant};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("history: {0}")]
    Invalid(String),
    /// The record was written, but the file had changed outside the daemon.
    #[error("history: {0}")]
    Changed(String),
}

const MAGIC: &[u8; 8] = b"SBHIST1\n";

/// One embedding to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub source: String,
    pub target: Target,
    pub seq: i64,
    pub t_start_ns: i64,
    pub t_end_ns: i64,
    pub vector: Vec<f32>,
}

/// One search result (the bus's shape of a matching window).
pub use crate::bus::msg::Hit;

/// What to search for.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    /// Unit L2 norm, the history's dimension.
    pub vector: Vec<f32>,
    pub k: usize,
    /// Empty: every stream kind.
    pub targets: Vec<Target>,
    /// Empty: every source.
    pub sources: Vec<String>,
    /// Windows that end at or after `since_ns` and start before `until_ns`.
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
}

/// What a search found, and what it cost.
#[derive(Debug, Clone, Default)]
pub struct SearchResult {
    pub hits: Vec<Hit>,
    /// Windows that passed the filters (scored approximately).
    pub scanned: usize,
    /// Windows re-scored exactly.
    pub rescored: usize,
    /// Records that could not be read back (skipped, counted in `corrupt`).
    pub faults: Vec<ReadFault>,
}

/// Settings of [`History::open`].
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    pub retention_ns: i64,
    pub max_bytes: u64,
    pub segment_ns: i64,
    pub sync: Duration,
}

struct Entry {
    stream: u16,
    seq: i64,
    t_start_ns: i64,
    t_end_ns: i64,
    /// Offset of the record (its length field) in the segment file.
    offset: u64,
    /// Length of the record's body.
    len: u32,
    q: Quant,
    /// Found damaged or unreadable when read: never searched again.
    dead: std::sync::atomic::AtomicBool,
}

struct Segment {
    path: PathBuf,
    file: std::fs::File,
    bytes: u64,
    /// The model matches: the entries are indexed and searched.
    searchable: bool,
    entries: Vec<Entry>,
    codes: Vec<i8>,
    /// Records in the file (indexed or not).
    records: usize,
    t_min: i64,
    t_max: i64,
    first_t_end: i64,
}

/// See the module documentation.
pub struct History {
    dir: PathBuf,
    model: String,
    dim: usize,
    opts: HistoryOptions,
    segments: VecDeque<Segment>,
    streams: Vec<(String, Target)>,
    newest_t_end: i64,
    dirty_since: Option<Instant>,
    /// Problems found at load (cut tails, unreadable files), for the log and health.
    pub load_notes: Vec<String>,
    /// Records found damaged (bad CRC, unreadable), at load or when read.
    corrupt: std::sync::atomic::AtomicU64,
}

/// Why a record could not be read back.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadFault {
    /// Its bytes no longer match their CRC (or its length field changed).
    Corrupt(String),
    /// The file could not be read there (cut short, I/O error).
    Io(String),
}

impl std::fmt::Display for ReadFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFault::Corrupt(s) | ReadFault::Io(s) => f.write_str(s),
        }
    }
}

fn target_code(t: Target) -> u8 {
    match t {
        Target::Modality(Modality::Vision) => 0,
        Target::Modality(Modality::Text) => 1,
        Target::Modality(Modality::Audio) => 2,
        Target::Modality(Modality::Depth) => 3,
        Target::Modality(Modality::Thermal) => 4,
        Target::Modality(Modality::Imu) => 5,
        Target::Fused => 6,
    }
}

fn target_of(c: u8) -> Option<Target> {
    Some(match c {
        0 => Modality::Vision.into(),
        1 => Modality::Text.into(),
        2 => Modality::Audio.into(),
        3 => Modality::Depth.into(),
        4 => Modality::Thermal.into(),
        5 => Modality::Imu.into(),
        6 => Target::Fused,
        _ => return None,
    })
}

fn ioerr(path: &Path, what: &str, e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Io {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

/// A record's body, as written.
fn encode(r: &Record) -> Vec<u8> {
    let src = r.source.as_bytes();
    let src = &src[..src.len().min(255)];
    let mut b = Vec::with_capacity(26 + src.len() + 4 * r.vector.len());
    b.extend_from_slice(&r.seq.to_le_bytes());
    b.extend_from_slice(&r.t_start_ns.to_le_bytes());
    b.extend_from_slice(&r.t_end_ns.to_le_bytes());
    b.push(target_code(r.target));
    b.push(src.len() as u8);
    b.extend_from_slice(src);
    for x in &r.vector {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

/// Parse a record body: (record, offset of the vector within the body).
fn decode(b: &[u8], dim: usize) -> Option<(Record, usize)> {
    let i64_at = |o: usize| Some(i64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let (seq, t0, t1) = (i64_at(0)?, i64_at(8)?, i64_at(16)?);
    let target = target_of(*b.get(24)?)?;
    let n = *b.get(25)? as usize;
    let source = std::str::from_utf8(b.get(26..26 + n)?).ok()?.to_string();
    let vo = 26 + n;
    let vb = b.get(vo..)?;
    if vb.len() != 4 * dim {
        return None;
    }
    let vector = vb
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((
        Record {
            source,
            target,
            seq,
            t_start_ns: t0,
            t_end_ns: t1,
            vector,
        },
        vo,
    ))
}

impl Entry {
    fn is_dead(&self) -> bool {
        self.dead.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Walk the records of a segment's bytes from `start`: the byte ranges of the good
/// ones (whole records, length field included), the offsets where damaged bytes were
/// skipped, and the end of the last good record. After a damaged record the walk
/// resynchronises on the next offset that holds a whole record with a matching CRC,
/// so one bad record never costs the good ones after it. Bytes after the last good
/// record that hold no whole record are a torn tail, not damage.
fn scan_records(all: &[u8], start: usize, dim: usize) -> (Vec<std::ops::Range<usize>>, Vec<usize>, usize) {
    let record_at = |off: usize| -> Option<usize> {
        let head = all.get(off..off + 8)?;
        let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
        // A body is 26 bytes of fields, a source of at most 255 and the vector.
        if len < 26 + 4 * dim || len > 26 + 255 + 4 * dim {
            return None;
        }
        let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
        let body = all.get(off + 8..off + 8 + len)?;
        (crc32fast::hash(body) == crc && decode(body, dim).is_some()).then_some(8 + len)
    };
    let (mut good, mut damaged) = (Vec::new(), Vec::new());
    let mut off = start;
    let mut good_end = start;
    while off < all.len() {
        if let Some(n) = record_at(off) {
            good.push(off..off + n);
            off += n;
            good_end = off;
            continue;
        }
        // Resynchronise: the next offset that starts a good record.
        match (off + 1..all.len().saturating_sub(8)).find(|o| record_at(*o).is_some()) {
            Some(next) => {
                damaged.push(off);
                off = next;
            }
            None => break,
        }
    }
    (good, damaged, good_end)
}

/// Where a damaged segment's bytes are kept: `<file>.bad-<unix seconds>`.
fn bad_copy_path(path: &Path) -> PathBuf {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".bad-{t}"));
    PathBuf::from(p)
}

fn header(dim: usize, model: &str) -> Vec<u8> {
    let m = model.as_bytes();
    let m = &m[..m.len().min(255)];
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&(dim as u32).to_le_bytes());
    h.push(m.len() as u8);
    h.extend_from_slice(m);
    h
}

impl History {
    /// Open (creating) the history in `dir` for embeddings of `dim` from `model`, and
    /// load what is there. Damaged files do not stop the daemon: their good records
    /// are kept, the rest is cut off, and [`History::load_notes`] says so.
    pub fn open(dir: &Path, model: &str, dim: usize, opts: HistoryOptions) -> Result<History, HistoryError> {
        std::fs::create_dir_all(dir).map_err(|e| ioerr(dir, "cannot create the directory", e))?;
        let mut h = History {
            dir: dir.to_path_buf(),
            model: model.to_string(),
            dim,
            opts,
            segments: VecDeque::new(),
            streams: Vec::new(),
            newest_t_end: i64::MIN,
            dirty_since: None,
            load_notes: Vec::new(),
            corrupt: std::sync::atomic::AtomicU64::new(0),
        };
        let mut files: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(|e| ioerr(dir, "cannot list", e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let t = name.strip_prefix("seg-")?.strip_suffix(".sbh")?.parse::<i64>().ok()?;
                Some((t, e.path()))
            })
            .collect();
        files.sort();
        for (_, path) in files {
            match h.load_segment(&path) {
                Ok(Some(seg)) => h.segments.push_back(seg),
                Ok(None) => {}
                Err(e) => h.load_notes.push(e.to_string()),
            }
        }
        h.expire();
        Ok(h)
    }

    fn stream_id(&mut self, source: &str, target: Target) -> u16 {
        if let Some(i) = self.streams.iter().position(|(s, t)| s == source && *t == target) {
            return i as u16;
        }
        self.streams.push((source.to_string(), target));
        (self.streams.len() - 1).min(u16::MAX as usize) as u16
    }

    /// Read one segment file; `None` for an empty file (removed).
    fn load_segment(&mut self, path: &Path) -> Result<Option<Segment>, HistoryError> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| ioerr(path, "cannot open", e))?;
        let mut all = Vec::new();
        file.read_to_end(&mut all).map_err(|e| ioerr(path, "cannot read", e))?;
        if all.is_empty() {
            let _ = std::fs::remove_file(path);
            return Ok(None);
        }
        if all.len() < 13 || &all[..8] != MAGIC {
            return Err(HistoryError::Invalid(format!(
                "{} is not a history segment; left alone",
                path.display()
            )));
        }
        let dim = u32::from_le_bytes(all[8..12].try_into().unwrap_or_default()) as usize;
        let mlen = all[12] as usize;
        let model = all
            .get(13..13 + mlen)
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .unwrap_or_default();
        let searchable = dim == self.dim && model == self.model;
        let mut seg = Segment {
            path: path.to_path_buf(),
            file,
            bytes: 0,
            searchable,
            entries: Vec::new(),
            codes: Vec::new(),
            records: 0,
            t_min: i64::MAX,
            t_max: i64::MIN,
            first_t_end: i64::MIN,
        };
        let head_len = 13 + mlen;
        let (good, damaged, good_end) = scan_records(&all, head_len, dim);
        if !damaged.is_empty() {
            // Damage inside the file: keep its bytes aside, then rewrite it with the
            // good records only (those after the damage included).
            let copy = bad_copy_path(path);
            let kept = std::fs::write(&copy, &all);
            self.corrupt
                .fetch_add(damaged.len() as u64, std::sync::atomic::Ordering::Relaxed);
            self.load_notes.push(format!(
                "{}: {} damaged record(s) skipped, {} good record(s) kept; {}",
                path.display(),
                damaged.len(),
                good.len(),
                match kept {
                    Ok(()) => format!("the damaged file is kept as {}", copy.display()),
                    Err(e) => format!("a copy could not be kept ({}: {e})", copy.display()),
                }
            ));
            let mut fresh = all[..head_len].to_vec();
            for r in &good {
                fresh.extend_from_slice(&all[r.clone()]);
            }
            let tmp = path.with_extension("sbh.tmp");
            let rewrite = || -> std::io::Result<std::fs::File> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&fresh)?;
                f.sync_all()?;
                std::fs::rename(&tmp, path)?;
                std::fs::OpenOptions::new().read(true).append(true).open(path)
            };
            seg.file = rewrite().map_err(|e| ioerr(path, "cannot rewrite without its damaged records", e))?;
        } else if good_end < all.len() {
            self.load_notes.push(format!(
                "{}: {} bytes after the last good record were cut off (a torn write)",
                path.display(),
                all.len() - good_end
            ));
            seg.file
                .set_len(good_end as u64)
                .map_err(|e| ioerr(path, "cannot cut the torn tail", e))?;
        }
        // Index the good records where they now stand (packed after the header when
        // the file was rewritten without its damaged ones).
        let rewritten = !damaged.is_empty();
        let mut end = head_len;
        for r in &good {
            let Some((rec, _)) = decode(&all[r.start + 8..r.end], dim) else {
                continue;
            };
            let at = if rewritten { end } else { r.start };
            self.index_record(&mut seg, &rec, at as u64, (r.len() - 8) as u32);
            end = at + r.len();
        }
        let good_end = end;
        seg.bytes = good_end as u64;
        if !searchable && seg.records > 0 {
            self.load_notes.push(format!(
                "{}: written by model `{model}` ({dim} dims), not `{}`: kept until it expires, not searched",
                path.display(),
                self.model
            ));
        }
        Ok(Some(seg))
    }

    fn index_record(&mut self, seg: &mut Segment, r: &Record, offset: u64, len: u32) {
        if seg.first_t_end == i64::MIN {
            seg.first_t_end = r.t_end_ns;
        }
        seg.records += 1;
        seg.t_min = seg.t_min.min(r.t_start_ns);
        seg.t_max = seg.t_max.max(r.t_end_ns);
        self.newest_t_end = self.newest_t_end.max(r.t_end_ns);
        let stream = self.stream_id(&r.source, r.target);
        if !seg.searchable {
            // Only the times are kept (for expiry).
            return;
        }
        let at = seg.codes.len();
        seg.codes.resize(at + self.dim, 0);
        let q = index::quantise(&r.vector, &mut seg.codes[at..]);
        seg.entries.push(Entry {
            stream,
            seq: r.seq,
            t_start_ns: r.t_start_ns,
            t_end_ns: r.t_end_ns,
            offset,
            len,
            q,
            dead: std::sync::atomic::AtomicBool::new(false),
        });
    }

    fn new_segment(&mut self, first_t_end: i64) -> Result<Segment, HistoryError> {
        let mut t = first_t_end;
        let mut path = self.dir.join(format!("seg-{t}.sbh"));
        while path.exists() {
            t += 1;
            path = self.dir.join(format!("seg-{t}.sbh"));
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| ioerr(&path, "cannot create", e))?;
        let h = header(self.dim, &self.model);
        if let Err(e) = file.write_all(&h) {
            let _ = std::fs::remove_file(&path);
            return Err(ioerr(&path, "cannot write", e));
        }
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(Segment {
            path,
            file,
            bytes: h.len() as u64,
            searchable: true,
            entries: Vec::new(),
            codes: Vec::new(),
            records: 0,
            t_min: i64::MAX,
            t_max: i64::MIN,
            first_t_end,
        })
    }

    /// Append one embedding. On a write error nothing of it stays on disk or in the
    /// index (the file is cut back), and the error names the file.
    pub fn append(&mut self, r: &Record, now: Instant) -> Result<(), HistoryError> {
        if r.vector.len() != self.dim {
            return Err(HistoryError::Invalid(format!(
                "{}/{} seq {}: {} dims, the history holds {}",
                r.target,
                r.source,
                r.seq,
                r.vector.len(),
                self.dim
            )));
        }
        let body = encode(r);
        let rotate = match self.segments.back() {
            None => true,
            Some(s) => {
                !s.searchable
                    || r.t_end_ns.saturating_sub(s.first_t_end) >= self.opts.segment_ns
                    || s.bytes + body.len() as u64 + 8 > (self.opts.max_bytes / 8).max(1 << 16)
            }
        };
        if rotate {
            if let Some(s) = self.segments.back() {
                let _ = s.file.sync_data();
            }
            let seg = self.new_segment(r.t_end_ns)?;
            self.segments.push_back(seg);
        }
        let mut rec = Vec::with_capacity(8 + body.len());
        rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        rec.extend_from_slice(&body);
        let mut seg = self.segments.pop_back().expect("a segment was just ensured");
        // The file may have changed under the daemon (cut short by hand): appending
        // goes to its real end, so the record's offset is read from the file.
        let note = match seg.file.metadata() {
            Ok(m) if m.len() != seg.bytes => {
                let note = format!(
                    "{} is {} bytes, {} were written: changed outside the daemon",
                    seg.path.display(),
                    m.len(),
                    seg.bytes
                );
                seg.bytes = m.len();
                Some(note)
            }
            _ => None,
        };
        let before = seg.bytes;
        let res = seg.file.write_all(&rec);
        let out = match res {
            Ok(()) => {
                seg.bytes += rec.len() as u64;
                self.index_record(&mut seg, r, before, body.len() as u32);
                self.dirty_since.get_or_insert(now);
                Ok(())
            }
            Err(e) => {
                let _ = seg.file.set_len(before);
                Err(ioerr(&seg.path, "cannot append", e))
            }
        };
        self.segments.push_back(seg);
        self.maybe_sync(now);
        self.expire();
        match (out, note) {
            (Ok(()), Some(note)) => Err(HistoryError::Changed(note)),
            (out, _) => out,
        }
    }

    /// fdatasync the open segment if data has waited `sync` or longer.
    pub fn maybe_sync(&mut self, now: Instant) {
        if let Some(t) = self.dirty_since {
            if now.saturating_duration_since(t) >= self.opts.sync {
                self.sync();
            }
        }
    }

    /// fdatasync the open segment now.
    pub fn sync(&mut self) {
        if let Some(s) = self.segments.back() {
            let _ = s.file.sync_data();
        }
        self.dirty_since = None;
    }

    /// Remove segments past the retention or over the byte bound (never the open one).
    fn expire(&mut self) {
        let cutoff = self.newest_t_end.saturating_sub(self.opts.retention_ns);
        while self.segments.len() > 1 {
            let total: u64 = self.segments.iter().map(|s| s.bytes).sum();
            let oldest = &self.segments[0];
            if oldest.t_max >= cutoff && total <= self.opts.max_bytes {
                break;
            }
            if let Some(s) = self.segments.pop_front() {
                let _ = std::fs::remove_file(&s.path);
            }
        }
    }

    /// Embeddings kept (searchable or not).
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Disk used by the segment files.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Start of the oldest window kept.
    pub fn oldest_ns(&self) -> Option<i64> {
        self.segments.iter().map(|s| s.t_min).filter(|t| *t != i64::MAX).min()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Read one record back, checking its length and CRC: its vector, or why not (the
    /// entry is then dead, and counted in `corrupt`).
    fn read_vector(&self, seg: &Segment, e: &Entry) -> Result<Vec<f32>, ReadFault> {
        let fault = |f: ReadFault| {
            if !e.dead.swap(true, std::sync::atomic::Ordering::Relaxed) {
                self.corrupt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            f
        };
        let mut b = vec![0u8; 8 + e.len as usize];
        seg.file.read_exact_at(&mut b, e.offset).map_err(|err| {
            fault(ReadFault::Io(format!(
                "{}: cannot read the record at byte {}: {err}",
                seg.path.display(),
                e.offset
            )))
        })?;
        let len = u32::from_le_bytes(b[..4].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(b[4..8].try_into().unwrap_or_default());
        if len != e.len || crc32fast::hash(&b[8..]) != crc {
            return Err(fault(ReadFault::Corrupt(format!(
                "{}: the record at byte {} (seq {}) does not match its checksum",
                seg.path.display(),
                e.offset,
                e.seq
            ))));
        }
        let v = &b[b.len() - 4 * self.dim..];
        Ok(v.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Records found damaged or unreadable so far (at load and when read).
    pub fn corrupt(&self) -> u64 {
        self.corrupt.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The embedding of one window, if it is kept (the newest match).
    pub fn get(&self, source: &str, target: Target, seq: i64) -> Result<Option<Record>, HistoryError> {
        let Some(stream) = self.streams.iter().position(|(s, t)| s == source && *t == target) else {
            return Ok(None);
        };
        for seg in self.segments.iter().rev().filter(|s| s.searchable) {
            if let Some(e) = seg
                .entries
                .iter()
                .rev()
                .find(|e| e.stream as usize == stream && e.seq == seq && !e.is_dead())
            {
                return Ok(Some(Record {
                    source: source.to_string(),
                    target,
                    seq,
                    t_start_ns: e.t_start_ns,
                    t_end_ns: e.t_end_ns,
                    vector: self
                        .read_vector(seg, e)
                        .map_err(|f| HistoryError::Invalid(f.to_string()))?,
                }));
            }
        }
        Ok(None)
    }

    /// The exact top-k windows by cosine with `req.vector`, best first.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResult, HistoryError> {
        if req.vector.len() != self.dim {
            return Err(HistoryError::Invalid(format!(
                "the query has {} dims, the history holds {}",
                req.vector.len(),
                self.dim
            )));
        }
        let k = req.k.max(1);
        let streams_ok: Vec<bool> = self
            .streams
            .iter()
            .map(|(s, t)| {
                (req.targets.is_empty() || req.targets.contains(t))
                    && (req.sources.is_empty() || req.sources.contains(s))
            })
            .collect();
        let (since, until) = (req.since_ns.unwrap_or(i64::MIN), req.until_ns.unwrap_or(i64::MAX));
        let mut qc = vec![0i8; self.dim];
        let qq = index::quantise(&req.vector, &mut qc);
        // Approximate scores of every window that passes the filters.
        let segs: Vec<(usize, &Segment)> = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.searchable && s.t_max >= since && s.t_min < until)
            .collect();
        let scan = |(si, seg): &(usize, &Segment)| -> Vec<(usize, Approx)> {
            let mut out = Vec::new();
            for (i, e) in seg.entries.iter().enumerate() {
                if !streams_ok[e.stream as usize] || e.t_end_ns < since || e.t_start_ns >= until || e.is_dead() {
                    continue;
                }
                let codes = &seg.codes[i * self.dim..(i + 1) * self.dim];
                let score = e.q.scale * qq.scale * index::dot_i8(codes, &qc) as f32;
                let bound = e.q.residual + e.q.norm * qq.residual;
                out.push((*si, Approx { id: i, score, bound }));
            }
            out
        };
        let total: usize = segs.iter().map(|(_, s)| s.entries.len()).sum();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        let scored: Vec<(usize, Approx)> = if threads > 1 && total > 20_000 && segs.len() > 1 {
            // Split the segments into `threads` groups of about equal size.
            let mut groups: Vec<Vec<(usize, &Segment)>> = vec![Vec::new(); threads];
            let mut sizes = vec![0usize; threads];
            for s in &segs {
                let g = (0..threads).min_by_key(|g| sizes[*g]).unwrap_or(0);
                sizes[g] += s.1.entries.len();
                groups[g].push(*s);
            }
            std::thread::scope(|sc| {
                let handles: Vec<_> = groups
                    .iter()
                    .map(|g| sc.spawn(move || g.iter().flat_map(scan).collect::<Vec<_>>()))
                    .collect();
                handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
            })
        } else {
            segs.iter().flat_map(scan).collect()
        };
        let scanned = scored.len();
        // Ids must be unique across segments for `candidates`.
        let offsets: Vec<usize> = {
            let mut acc = 0;
            self.segments
                .iter()
                .map(|s| {
                    let o = acc;
                    acc += s.entries.len();
                    o
                })
                .collect()
        };
        let mut flat: Vec<Approx> = scored
            .into_iter()
            .map(|(si, a)| Approx {
                id: offsets[si] + a.id,
                ..a
            })
            .collect();
        let locate = |id: usize| -> (usize, usize) {
            let si = offsets.partition_point(|o| *o <= id) - 1;
            (si, id - offsets[si])
        };
        // Re-score the candidates exactly; a record that cannot be read back is
        // skipped (and dead from now on), and the candidates are chosen again without it.
        let mut faults = Vec::new();
        let (hits, rescored) = loop {
            let cands = index::candidates(&flat, k);
            let rescored = cands.len();
            let mut hits = Vec::with_capacity(cands.len());
            let mut failed = false;
            for c in cands {
                let (si, i) = locate(c.id);
                let seg = &self.segments[si];
                let e = &seg.entries[i];
                match self.read_vector(seg, e) {
                    Ok(v) => {
                        let (source, target) = &self.streams[e.stream as usize];
                        hits.push(Hit {
                            source: source.clone(),
                            modality: *target,
                            seq: e.seq,
                            t_start_ns: e.t_start_ns,
                            t_end_ns: e.t_end_ns,
                            score: index::dot_f32(&v, &req.vector),
                        });
                    }
                    Err(f) => {
                        faults.push(f);
                        failed = true;
                    }
                }
            }
            if !failed {
                break (hits, rescored);
            }
            flat.retain(|a| {
                let (si, i) = locate(a.id);
                !self.segments[si].entries[i].is_dead()
            });
        };
        let mut hits = hits;
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.t_end_ns.cmp(&a.t_end_ns)));
        hits.truncate(k);
        Ok(SearchResult {
            hits,
            scanned,
            rescored,
            faults,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history in `dir` holding camera windows 0..n of `dim` dims.
    fn camera_history(dir: &Path, dim: usize, n: i64) -> History {
        let mut h = History::open(dir, "m", dim, opts()).unwrap();
        for seq in 0..n {
            h.append(&rec("cam", Modality::Vision.into(), seq, dim), Instant::now())
                .unwrap();
        }
        h
    }

    impl History {
        /// Make writes to the open segment fail (a read-only handle), or work again.
        fn writable(&mut self, on: bool) {
            let seg = self.segments.back_mut().unwrap();
            seg.file = std::fs::OpenOptions::new()
                .read(true)
                .append(on)
                .open(&seg.path)
                .unwrap();
        }
    }

    #[test]
    fn a_failed_write_leaves_no_record_and_appending_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let dim = 16;
        let now = Instant::now();
        let mut h = camera_history(dir.path(), dim, 5);
        let bytes = h.bytes();
        h.writable(false);
        let e = h.append(&rec("cam", Modality::Vision.into(), 5, dim), now).unwrap_err();
        assert!(
            e.to_string().contains("cannot append") && e.to_string().contains("seg-"),
            "{e}"
        );
        assert_eq!((h.len(), h.bytes()), (5, bytes), "nothing of it is indexed or counted");
        assert!(h.get("cam", Modality::Vision.into(), 5).unwrap().is_none());
        h.writable(true);
        h.append(&rec("cam", Modality::Vision.into(), 6, dim), now).unwrap();
        drop(h);
        let h = History::open(dir.path(), "m", dim, opts()).unwrap();
        assert!(h.load_notes.is_empty(), "{:?}", h.load_notes);
        assert_eq!(h.len(), 6);
        assert_eq!(
            h.get("cam", Modality::Vision.into(), 6).unwrap().unwrap(),
            rec("cam", Modality::Vision.into(), 6, dim)
        );
    }

    fn opts() -> HistoryOptions {
        HistoryOptions {
            retention_ns: 3600 * 1_000_000_000,
            max_bytes: 64 << 20,
            segment_ns: 60 * 1_000_000_000,
            sync: Duration::from_secs(1),
        }
    }

    fn vec_of(seed: u64, dim: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        crate::engine::l2_normalise(&mut v);
        v
    }

    fn rec(source: &str, target: Target, seq: i64, dim: usize) -> Record {
        Record {
            source: source.into(),
            target,
            seq,
            t_start_ns: seq * 2_000_000_000,
            t_end_ns: seq * 2_000_000_000 + 2_000_000_000,
            vector: vec_of(seq as u64 * 7 + target_code(target) as u64, dim),
        }
    }

    fn exact_top(recs: &[Record], q: &[f32], k: usize) -> Vec<(String, i64, f32)> {
        let mut v: Vec<(String, i64, f32)> = recs
            .iter()
            .map(|r| (r.source.clone(), r.seq, index::dot_f32(&r.vector, q)))
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v.truncate(k);
        v
    }

    #[test]
    fn search_equals_brute_force_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let dim = 48;
        let now = Instant::now();
        let mut h = History::open(dir.path(), "m", dim, opts()).unwrap();
        let mut recs = Vec::new();
        for seq in 0..400 {
            for (src, t) in [
                ("cam", Target::Modality(Modality::Vision)),
                ("mic", Modality::Audio.into()),
                ("fused", Target::Fused),
            ] {
                let r = rec(src, t, seq, dim);
                h.append(&r, now).unwrap();
                recs.push(r);
            }
        }
        assert_eq!(h.len(), 1200);
        assert!(h.segments.len() >= 13, "one segment a minute of window time");
        let check = |h: &History| {
            for qs in 0..20u64 {
                let q = vec_of(10_000 + qs, dim);
                let got = h
                    .search(&SearchRequest {
                        vector: q.clone(),
                        k: 10,
                        ..Default::default()
                    })
                    .unwrap();
                let want = exact_top(&recs, &q, 10);
                let got: Vec<(String, i64, f32)> =
                    got.hits.iter().map(|x| (x.source.clone(), x.seq, x.score)).collect();
                assert_eq!(got, want, "query {qs}");
            }
        };
        check(&h);
        // Filters: only audio, only the last 100 seconds of windows.
        let q = vec_of(77, dim);
        let r = h
            .search(&SearchRequest {
                vector: q.clone(),
                k: 5,
                targets: vec![Modality::Audio.into()],
                since_ns: Some(700 * 1_000_000_000),
                ..Default::default()
            })
            .unwrap();
        let audio: Vec<Record> = recs
            .iter()
            .filter(|r| r.source == "mic" && r.t_end_ns >= 700_000_000_000)
            .cloned()
            .collect();
        assert_eq!(
            r.hits.iter().map(|x| x.seq).collect::<Vec<_>>(),
            exact_top(&audio, &q, 5).iter().map(|x| x.1).collect::<Vec<_>>()
        );
        assert!(r.hits.iter().all(|x| x.modality == Target::Modality(Modality::Audio)));
        assert!(r.rescored < 100, "the bound prunes: {} re-scored", r.rescored);
        // Reload: the same answers, and a window can be fetched by (source, kind, seq).
        drop(h);
        let h = History::open(dir.path(), "m", dim, opts()).unwrap();
        assert!(h.load_notes.is_empty(), "{:?}", h.load_notes);
        assert_eq!(h.len(), 1200);
        check(&h);
        let got = h.get("fused", Target::Fused, 123).unwrap().unwrap();
        assert_eq!(got, rec("fused", Target::Fused, 123, dim));
        assert!(h.get("fused", Target::Fused, 4000).unwrap().is_none());
    }

    /// Every filter (`targets`, `sources`, `since_ns`, `until_ns`, alone and together)
    /// on a history large enough for the parallel scan (over 20 000 windows in more
    /// than one segment): the hits are the brute-force top k of the windows that pass
    /// the filters, with their exact cosines, and `scanned` is how many pass.
    #[test]
    fn filters_and_the_parallel_scan_equal_brute_force() {
        const S: i64 = 1_000_000_000;
        let dir = tempfile::tempdir().unwrap();
        let dim = 32;
        let now = Instant::now();
        let o = HistoryOptions {
            segment_ns: 600 * S,
            retention_ns: 24 * 3600 * S,
            ..opts()
        };
        let mut h = History::open(dir.path(), "m", dim, o).unwrap();
        let streams = [
            ("cam", Target::Modality(Modality::Vision)),
            ("cam2", Target::Modality(Modality::Vision)),
            ("mic", Modality::Audio.into()),
            ("fused", Target::Fused),
        ];
        // 6000 windows per stream, 2 s long every 1 s: 24 000 in all, 6001 s of time.
        let mut recs = Vec::new();
        for seq in 0..6000i64 {
            for (i, (src, t)) in streams.iter().enumerate() {
                let r = Record {
                    source: src.to_string(),
                    target: *t,
                    seq,
                    t_start_ns: seq * S,
                    t_end_ns: seq * S + 2 * S,
                    vector: vec_of(seq as u64 * 4 + i as u64, dim),
                };
                h.append(&r, now).unwrap();
                recs.push(r);
            }
        }
        assert_eq!(h.len(), 24_000);
        // What makes `search` scan in parallel (with more than one CPU).
        assert!(h.segments.len() >= 10, "{} segments", h.segments.len());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            eprintln!("one CPU: the parallel scan is not exercised here");
        }
        type Key = (String, Target, i64, f32);
        let brute = |req: &SearchRequest| -> (Vec<Key>, usize) {
            let (since, until) = (req.since_ns.unwrap_or(i64::MIN), req.until_ns.unwrap_or(i64::MAX));
            let mut pass: Vec<(Key, i64)> = recs
                .iter()
                .filter(|r| {
                    (req.targets.is_empty() || req.targets.contains(&r.target))
                        && (req.sources.is_empty() || req.sources.contains(&r.source))
                        && r.t_end_ns >= since
                        && r.t_start_ns < until
                })
                .map(|r| {
                    let score = index::dot_f32(&r.vector, &req.vector);
                    ((r.source.clone(), r.target, r.seq, score), r.t_end_ns)
                })
                .collect();
            let n = pass.len();
            pass.sort_by(|a, b| b.0 .3.total_cmp(&a.0 .3).then(b.1.cmp(&a.1)));
            pass.truncate(req.k);
            (pass.into_iter().map(|(k, _)| k).collect(), n)
        };
        let sources = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // (what, targets, sources, since, until, k)
        type Case<'a> = (&'a str, Vec<Target>, Vec<String>, Option<i64>, Option<i64>, usize);
        let cases: Vec<Case> = vec![
            ("everything", vec![], vec![], None, None, 10),
            ("two sources", vec![], sources(&["cam2", "mic"]), None, None, 10),
            (
                "a source of a kind",
                vec![Modality::Vision.into()],
                sources(&["cam"]),
                None,
                None,
                10,
            ),
            (
                "a kind, two sources",
                vec![Modality::Vision.into()],
                sources(&["cam2", "mic"]),
                None,
                None,
                10,
            ),
            ("an unknown source", vec![], sources(&["nobody"]), None, None, 10),
            ("until alone", vec![], vec![], None, Some(3000 * S), 10),
            ("until over 20 000 windows", vec![], vec![], None, Some(5500 * S), 10),
            (
                "until and a source",
                vec![],
                sources(&["fused"]),
                None,
                Some(5500 * S),
                10,
            ),
            (
                "since and until",
                vec![],
                vec![],
                Some(1000 * S + S / 2),
                Some(1200 * S),
                10,
            ),
            // Both edges exactly on window times, and k over the count: every window
            // that ends at or after `since` and starts before `until`, none other.
            ("edges, all of them", vec![], vec![], Some(102 * S), Some(200 * S), 1000),
            (
                "edges, one stream",
                vec![Target::Fused],
                vec![],
                Some(102 * S),
                Some(200 * S),
                1000,
            ),
            ("until before everything", vec![], vec![], None, Some(0), 10),
        ];
        for (what, targets, sources, since_ns, until_ns, k) in cases {
            for qs in 0..4u64 {
                let req = SearchRequest {
                    vector: vec_of(1_000_000 + qs, dim),
                    k,
                    targets: targets.clone(),
                    sources: sources.clone(),
                    since_ns,
                    until_ns,
                };
                let got = h.search(&req).unwrap();
                let (want, passing) = brute(&req);
                let got_keys: Vec<Key> = got
                    .hits
                    .iter()
                    .map(|x| (x.source.clone(), x.modality, x.seq, x.score))
                    .collect();
                assert_eq!(got_keys, want, "{what}, query {qs}");
                assert_eq!(got.scanned, passing, "{what}: windows that pass the filters");
                assert!(got.faults.is_empty());
                if k >= passing {
                    assert_eq!(got.hits.len(), passing, "{what}: all of them");
                }
            }
        }
        // The edges, counted by hand: windows 100..=199 of each stream (window 100
        // ends at 102 s, window 200 starts at 200 s).
        let req = SearchRequest {
            vector: vec_of(5, dim),
            k: 1000,
            since_ns: Some(102 * S),
            until_ns: Some(200 * S),
            ..Default::default()
        };
        let got = h.search(&req).unwrap();
        let mut seqs: Vec<i64> = got.hits.iter().map(|x| x.seq).collect();
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs, (100..200).collect::<Vec<_>>());
        assert_eq!(got.hits.len(), 400);
    }

    #[test]
    fn a_torn_tail_is_cut_and_everything_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dim = 16;
        let now = Instant::now();
        let h = camera_history(dir.path(), dim, 10);
        let path = h.segments[0].path.clone();
        drop(h);
        // A record half written (a power cut mid-write), then garbage.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        let body = encode(&rec("cam", Modality::Vision.into(), 10, dim));
        f.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
        f.write_all(&crc32fast::hash(&body).to_le_bytes()).unwrap();
        f.write_all(&body[..body.len() / 2]).unwrap();
        drop(f);
        let mut h = History::open(dir.path(), "m", dim, opts()).unwrap();
        assert_eq!(h.len(), 10);
        assert!(h.load_notes[0].contains("cut off"), "{:?}", h.load_notes);
        // Appending goes on after the last good record.
        h.append(&rec("cam", Modality::Vision.into(), 10, dim), now).unwrap();
        drop(h);
        let h = History::open(dir.path(), "m", dim, opts()).unwrap();
        assert_eq!((h.len(), h.load_notes.len()), (11, 0));
        // A flipped byte inside a record: that record and the rest of its file go.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let h = History::open(dir.path(), "m", dim, opts()).unwrap();
        assert_eq!(h.len(), 10);
    }

    #[test]
    fn a_damaged_record_is_skipped_counted_and_kept_aside_and_the_good_ones_after_it_stay() {
        let dir = tempfile::tempdir().unwrap();
        let dim = 16;
        let h = camera_history(dir.path(), dim, 40);
        let path = h.segments[0].path.clone();
        let victim = &h.segments[0].entries[20];
        let (at, len) = (victim.offset as usize, victim.len as usize);
        // The query is the damaged window's own vector: it would be the top hit.
        let q = rec("cam", Modality::Vision.into(), 20, dim).vector;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at + 8 + len - 8] ^= 0x55; // inside record 20's vector
        std::fs::write(&path, &bytes).unwrap();
        // While running: the search skips it (no NaN, no -inf), says so, and counts it.
        let req = SearchRequest {
            vector: q.clone(),
            k: 5,
            ..Default::default()
        };
        let r = h.search(&req).unwrap();
        assert_eq!(r.hits.len(), 5);
        assert!(
            r.hits.iter().all(|x| x.score.is_finite() && x.seq != 20),
            "{:?}",
            r.hits
        );
        assert_eq!(r.faults.len(), 1, "{:?}", r.faults);
        assert!(matches!(&r.faults[0], ReadFault::Corrupt(m) if m.contains("checksum")));
        assert_eq!(h.corrupt(), 1);
        assert!(h.get("cam", Modality::Vision.into(), 20).unwrap().is_none());
        let again = h.search(&req).unwrap();
        assert!(again.faults.is_empty(), "a dead record is not read again");
        assert_eq!(again.hits, r.hits);
        drop(h);
        // At the next start: the 19 records after it are kept, the bytes kept aside.
        let h = History::open(dir.path(), "m", dim, opts()).unwrap();
        assert_eq!(h.len(), 39);
        assert_eq!(h.corrupt(), 1);
        // (Records 0..29 share the first segment file: 29 good ones are kept there.)
        assert!(
            h.load_notes[0].contains("1 damaged record(s) skipped, 29 good"),
            "{:?}",
            h.load_notes
        );
        let copies: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".sbh.bad-"))
            .collect();
        assert_eq!(copies.len(), 1);
        assert_eq!(
            std::fs::read(copies[0].path()).unwrap(),
            bytes,
            "the damaged bytes, as found"
        );
        for seq in (0..40).filter(|s| *s != 20) {
            let got = h.get("cam", Modality::Vision.into(), seq).unwrap().unwrap();
            assert_eq!(got.vector, rec("cam", Modality::Vision.into(), seq, dim).vector);
        }
        drop(h);
        let h = History::open(dir.path(), "m", dim, opts()).unwrap();
        assert_eq!((h.len(), h.load_notes.len()), (39, 0), "rewritten clean");
    }

    #[test]
    fn a_segment_cut_short_while_open_fails_no_search_and_appending_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let dim = 16;
        let now = Instant::now();
        let mut h = camera_history(dir.path(), dim, 20);
        assert_eq!(h.segments.len(), 1, "the open segment");
        let path = h.segments[0].path.clone();
        let keep = h.segments[0].entries[10].offset;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(keep)
            .unwrap();
        // A broad search meets the missing records: it answers with what is left.
        let req = SearchRequest {
            vector: rec("cam", Modality::Vision.into(), 15, dim).vector,
            k: 20,
            ..Default::default()
        };
        let r = h.search(&req).unwrap();
        assert_eq!(r.hits.len(), 10, "the ten records still in the file");
        assert_eq!(r.faults.len(), 10);
        assert!(matches!(&r.faults[0], ReadFault::Io(_)), "{:?}", r.faults[0]);
        // The next append lands at the file's real end, says the file changed, and
        // its record is readable.
        let e = h
            .append(&rec("cam", Modality::Vision.into(), 20, dim), now)
            .unwrap_err();
        assert!(matches!(e, HistoryError::Changed(_)), "{e}");
        h.append(&rec("cam", Modality::Vision.into(), 21, dim), now).unwrap();
        for seq in [20, 21] {
            let got = h.get("cam", Modality::Vision.into(), seq).unwrap().unwrap();
            assert_eq!(got.vector, rec("cam", Modality::Vision.into(), seq, dim).vector);
        }
        drop(h);
        let h = History::open(dir.path(), "m", dim, opts()).unwrap();
        assert_eq!(h.len(), 12);
    }

    #[test]
    fn old_and_oversized_history_expires_by_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        let dim = 256;
        let now = Instant::now();
        let o = HistoryOptions {
            retention_ns: 600 * 1_000_000_000,
            ..opts()
        };
        let mut h = History::open(dir.path(), "m", dim, o.clone()).unwrap();
        for seq in 0..1000 {
            h.append(&rec("cam", Modality::Vision.into(), seq, dim), now).unwrap();
        }
        // 2000 s of windows, 600 s kept (plus at most the segment being expired).
        let oldest = h.oldest_ns().unwrap();
        assert!(oldest >= (2000 - 600 - 60) * 1_000_000_000, "oldest {oldest}");
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, h.segments.len());
        // A byte bound: about 1 kB a record, at most 64 kB a segment here.
        let dir2 = tempfile::tempdir().unwrap();
        let small = HistoryOptions {
            max_bytes: 200_000,
            ..o
        };
        let mut h = History::open(dir2.path(), "m", dim, small).unwrap();
        for seq in 0..1000 {
            h.append(&rec("cam", Modality::Vision.into(), seq, dim), now).unwrap();
            assert!(h.bytes() <= 200_000, "{} bytes", h.bytes());
        }
        let on_disk: u64 = std::fs::read_dir(dir2.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(on_disk, h.bytes());
        assert!(h.len() > 100);
    }

    #[test]
    fn another_models_history_is_kept_but_not_searched() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut h = History::open(dir.path(), "old", 16, opts()).unwrap();
        h.append(&rec("cam", Modality::Vision.into(), 0, 16), now).unwrap();
        drop(h);
        let mut h = History::open(dir.path(), "new", 32, opts()).unwrap();
        assert!(h.load_notes[0].contains("not searched"), "{:?}", h.load_notes);
        assert_eq!(h.len(), 0);
        h.append(&rec("cam", Modality::Vision.into(), 1, 32), now).unwrap();
        assert_eq!(h.len(), 1);
        let e = h.append(&rec("cam", Modality::Vision.into(), 2, 16), now).unwrap_err();
        assert!(e.to_string().contains("16 dims"), "{e}");
    }
}
