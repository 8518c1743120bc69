//! Streaming MCAP reading (no whole-file buffer): channels first from the summary, or
//! by a linear scan when the file has none (a recording cut short), then messages in
//! file order. A truncated file yields every message before the cut, then ends with
//! [`ReadError::Truncated`].

use ::mcap::records::Record;
use ::mcap::sans_io::linear_reader::{LinearReadEvent, LinearReader, LinearReaderOptions};
use ::mcap::sans_io::summary_reader::{SummaryReadEvent, SummaryReader};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: not a readable MCAP file: {reason}")]
    Format { path: PathBuf, reason: String },
    /// The file ends inside a record (a recording cut short); what came before was read.
    #[error("{path}: the recording is cut short after {messages} messages ({reason})")]
    Truncated {
        path: PathBuf,
        messages: u64,
        reason: String,
    },
}

/// A channel of a recording.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    pub topic: String,
    /// Schema name (`foxglove.RawImage`, `sensebind.Imu`, …); empty without a schema.
    pub schema: String,
    pub message_encoding: String,
    /// Channel metadata (sensebind writes `nominal_rate_hz` on frame channels).
    pub metadata: BTreeMap<String, String>,
    /// Messages on the channel, when the file's statistics say (or a scan counted).
    pub message_count: Option<u64>,
    /// Messages per second over the recording, estimated from the counts and times.
    pub rate_hz: Option<f64>,
}

fn rate(count: u64, first_ns: u64, last_ns: u64) -> Option<f64> {
    (count > 1 && last_ns > first_ns).then(|| (count - 1) as f64 / ((last_ns - first_ns) as f64 / 1e9))
}

/// One message.
#[derive(Debug, Clone)]
pub struct McapMessage {
    pub channel: std::sync::Arc<ChannelInfo>,
    pub log_time_ns: u64,
    pub data: Vec<u8>,
}

/// Largest record accepted (a frame bigger than this is a corrupt length).
const RECORD_LIMIT: usize = 512 << 20;

/// The channels of `path`, by topic.
pub fn channels(path: &Path) -> Result<BTreeMap<String, ChannelInfo>, ReadError> {
    let io = |e: std::io::Error| ReadError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut reader = SummaryReader::new_with_options(
        ::mcap::sans_io::summary_reader::SummaryReaderOptions::default()
            .with_file_size(size)
            .with_record_length_limit(RECORD_LIMIT),
    );
    let summary = (|| -> Result<Option<::mcap::Summary>, String> {
        while let Some(event) = reader.next_event() {
            match event.map_err(|e| e.to_string())? {
                SummaryReadEvent::ReadRequest(n) => {
                    let got = file.read(reader.insert(n)).map_err(|e| e.to_string())?;
                    reader.notify_read(got);
                }
                SummaryReadEvent::SeekRequest(to) => {
                    let pos = file.seek(to).map_err(|e| e.to_string())?;
                    reader.notify_seeked(pos);
                }
            }
        }
        Ok(reader.finish())
    })();
    if let Ok(Some(s)) = summary {
        if !s.channels.is_empty() {
            let counts = s.stats.as_ref().map(|st| st.channel_message_counts.clone());
            let span = s.stats.as_ref().map(|st| (st.message_start_time, st.message_end_time));
            return Ok(s
                .channels
                .values()
                .map(|c| {
                    (
                        c.topic.clone(),
                        ChannelInfo {
                            topic: c.topic.clone(),
                            schema: c.schema.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                            message_encoding: c.message_encoding.clone(),
                            metadata: c.metadata.clone(),
                            message_count: counts.as_ref().and_then(|m| m.get(&c.id).copied()),
                            rate_hz: match (counts.as_ref().and_then(|m| m.get(&c.id)), span) {
                                (Some(n), Some((a, b))) => rate(*n, a, b),
                                _ => None,
                            },
                        },
                    )
                })
                .collect());
        }
    }
    // No summary (cut short, or written without one): scan.
    let mut out = BTreeMap::new();
    let mut msgs = Messages::open(path)?;
    msgs.skip_bodies = true;
    let mut seen: HashMap<String, (u64, u64, u64)> = HashMap::new();
    for m in msgs.by_ref() {
        match m {
            Ok(m) => {
                let e = seen
                    .entry(m.channel.topic.clone())
                    .or_insert((0, m.log_time_ns, m.log_time_ns));
                e.0 += 1;
                e.1 = e.1.min(m.log_time_ns);
                e.2 = e.2.max(m.log_time_ns);
            }
            Err(ReadError::Truncated { .. }) => break,
            Err(e) => return Err(e),
        }
    }
    for c in msgs.channels.values() {
        let mut c = (**c).clone();
        if let Some((n, a, b)) = seen.get(&c.topic) {
            c.message_count = Some(*n);
            c.rate_hz = rate(*n, *a, *b);
        }
        out.insert(c.topic.clone(), c);
    }
    Ok(out)
}

/// The messages of a file, in file order.
pub struct Messages {
    path: PathBuf,
    file: File,
    reader: LinearReader,
    schemas: HashMap<u16, String>,
    channels: HashMap<u16, std::sync::Arc<ChannelInfo>>,
    /// Yield messages without their bodies (a scan for channels and counts).
    skip_bodies: bool,
    messages: u64,
    done: bool,
}

impl Messages {
    pub fn open(path: &Path) -> Result<Messages, ReadError> {
        let file = File::open(path).map_err(|e| ReadError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let reader = LinearReader::new_with_options(
            LinearReaderOptions::default()
                .with_skip_end_magic(false)
                .with_record_length_limit(RECORD_LIMIT),
        );
        Ok(Messages {
            path: path.to_path_buf(),
            file,
            reader,
            schemas: HashMap::new(),
            channels: HashMap::new(),
            skip_bodies: false,
            messages: 0,
            done: false,
        })
    }

    fn fail(&mut self, e: ::mcap::McapError) -> ReadError {
        self.done = true;
        match e {
            ::mcap::McapError::UnexpectedEof | ::mcap::McapError::UnexpectedEoc => ReadError::Truncated {
                path: self.path.clone(),
                messages: self.messages,
                reason: e.to_string(),
            },
            e if self.messages > 0 => ReadError::Truncated {
                path: self.path.clone(),
                messages: self.messages,
                reason: e.to_string(),
            },
            e => ReadError::Format {
                path: self.path.clone(),
                reason: e.to_string(),
            },
        }
    }
}

impl Iterator for Messages {
    type Item = Result<McapMessage, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let event = match self.reader.next_event() {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => return Some(Err(self.fail(e))),
                Some(Ok(ev)) => ev,
            };
            match event {
                LinearReadEvent::ReadRequest(n) => {
                    let buf = self.reader.insert(n);
                    match self.file.read(buf) {
                        Ok(got) => self.reader.notify_read(got),
                        Err(e) => {
                            self.done = true;
                            return Some(Err(ReadError::Io {
                                path: self.path.clone(),
                                reason: e.to_string(),
                            }));
                        }
                    }
                }
                LinearReadEvent::Record { data, opcode } => {
                    let record = match ::mcap::parse_record(opcode, data) {
                        Ok(r) => r,
                        Err(e) => return Some(Err(self.fail(e))),
                    };
                    match record {
                        Record::Schema { header, .. } => {
                            self.schemas.insert(header.id, header.name);
                        }
                        Record::Channel(c) => {
                            let schema = self.schemas.get(&c.schema_id).cloned().unwrap_or_default();
                            self.channels.insert(
                                c.id,
                                std::sync::Arc::new(ChannelInfo {
                                    topic: c.topic,
                                    schema,
                                    message_encoding: c.message_encoding,
                                    metadata: c.metadata,
                                    message_count: None,
                                    rate_hz: None,
                                }),
                            );
                        }
                        Record::Message { header, data } => {
                            let Some(channel) = self.channels.get(&header.channel_id).cloned() else {
                                continue; // a message before its channel: not playable
                            };
                            self.messages += 1;
                            return Some(Ok(McapMessage {
                                channel,
                                log_time_ns: header.log_time,
                                data: if self.skip_bodies {
                                    Vec::new()
                                } else {
                                    data.into_owned()
                                },
                            }));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
