//! rmw_zenoh's wire format, byte for byte (docs/ros2-design.md §3):
//! - data key `<domain>/<topic without leading />/<pkg>::msg::dds_::<Type>_/<hash>`,
//!   `<hash>` = `RIHS01_<64 hex>` (Jazzy and later) or `TypeHashNotSupported` (Humble);
//! - each sample's attachment: i64 LE sequence number (from 1 per publisher), i64 LE
//!   source timestamp (ns), then `0x10` (zenoh-ext's length of a 16-byte array) and the
//!   publisher's 16-byte GID;
//! - liveliness tokens `@ros2_lv/<domain>/<zid>/<node id>/<entity id>/<kind>/<enclave>/
//!   <namespace>/<node>[/<topic>/<type>/<hash>/<qos>]`, `/` inside a chunk written `%`.
//!
//! zenoh-bridge-ros2dds puts a topic `/imu/data` on the key `imu/data`: no domain, no
//! type, no attachment.

/// A message type sensebind reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KnownType {
    Image,
    CompressedImage,
    Imu,
    AudioData,
    AudioDataStamped,
    String,
    DiagnosticArray,
    /// `sensebind_msgs/msg/Embedding` (ros/sensebind_msgs in this repository).
    Embedding,
}

/// Which ROS 2 release's rmw_zenoh is on the other side: it decides the hash chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    /// Jazzy, Kilted, Rolling: keys and tokens carry the RIHS01 type hash.
    #[default]
    Jazzy,
    /// Humble: `TypeHashNotSupported`.
    Humble,
}

/// What Humble's rmw_zenoh writes where a type hash goes.
pub const NO_HASH: &str = "TypeHashNotSupported";

impl KnownType {
    pub const ALL: [KnownType; 8] = [
        KnownType::Image,
        KnownType::CompressedImage,
        KnownType::Imu,
        KnownType::AudioData,
        KnownType::AudioDataStamped,
        KnownType::String,
        KnownType::DiagnosticArray,
        KnownType::Embedding,
    ];

    /// The ROS name, `sensor_msgs/msg/Image`.
    pub fn ros_name(self) -> &'static str {
        match self {
            KnownType::Image => "sensor_msgs/msg/Image",
            KnownType::CompressedImage => "sensor_msgs/msg/CompressedImage",
            KnownType::Imu => "sensor_msgs/msg/Imu",
            KnownType::AudioData => "audio_common_msgs/msg/AudioData",
            KnownType::AudioDataStamped => "audio_common_msgs/msg/AudioDataStamped",
            KnownType::String => "std_msgs/msg/String",
            KnownType::DiagnosticArray => "diagnostic_msgs/msg/DiagnosticArray",
            KnownType::Embedding => "sensebind_msgs/msg/Embedding",
        }
    }

    /// The RIHS01 hash of the type's definition (as rosidl computes it; checked against
    /// rosbags in tests/fixtures/ros2/hashes.txt).
    pub fn rihs01(self) -> &'static str {
        match self {
            KnownType::Image => "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
            KnownType::CompressedImage => "RIHS01_15640771531571185e2efc8a100baf923961a4d15d5569652e6cb6691e8e371a",
            KnownType::Imu => "RIHS01_7d9a00ff131080897a5ec7e26e315954b8eae3353c3f995c55faf71574000b5b",
            KnownType::AudioData => "RIHS01_a9742fba1567e649bbdba6ae034a72c7ef129b97c7a4da50fd2f3e1bfd8ffa86",
            KnownType::AudioDataStamped => "RIHS01_6fc679d5a868ed68e4d301f1ef42abecc86140afb57d255656ff2d9e476ea9e3",
            KnownType::String => "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18",
            KnownType::DiagnosticArray => "RIHS01_5a8a36efb05fb25070fa0fb3810290c0e6cd4862b54a8fb975a1ee8dc55a333e",
            KnownType::Embedding => "RIHS01_933aea42a76b321a962f518a8d5e519ab19c87413a445c24d65c907387caaf33",
        }
    }

    /// The hash chunk of keys and tokens for `distro`.
    pub fn hash_chunk(self, distro: Distro) -> &'static str {
        match distro {
            Distro::Jazzy => self.rihs01(),
            Distro::Humble => NO_HASH,
        }
    }

    /// The DDS name rmw_zenoh puts in keys: `sensor_msgs::msg::dds_::Image_`.
    pub fn dds_name(self) -> String {
        dds_name(self.ros_name()).unwrap_or_default()
    }

    pub fn from_ros_name(name: &str) -> Option<KnownType> {
        KnownType::ALL.into_iter().find(|t| t.ros_name() == name)
    }

    pub fn from_dds_name(name: &str) -> Option<KnownType> {
        KnownType::ALL.into_iter().find(|t| t.dds_name() == name)
    }
}

/// `pkg/msg/Type` → `pkg::msg::dds_::Type_` (`None` for anything else).
pub fn dds_name(ros: &str) -> Option<String> {
    let mut parts = ros.split('/');
    let (pkg, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && !pkg.is_empty() && !kind.is_empty() && !name.is_empty())
        .then(|| format!("{pkg}::{kind}::dds_::{name}_"))
}

/// `pkg::msg::dds_::Type_` → `pkg/msg/Type`.
pub fn ros_name(dds: &str) -> Option<String> {
    let (ns, name) = dds.split_once("::dds_::")?;
    let (pkg, kind) = ns.split_once("::")?;
    let name = name.strip_suffix('_')?;
    (!pkg.is_empty() && !kind.is_empty() && !name.is_empty() && !name.contains(':'))
        .then(|| format!("{pkg}/{kind}/{name}"))
}

/// The data key of `topic` (`/camera/image_raw`) carrying `dds_type` on `domain`.
pub fn data_key(domain: u32, topic: &str, dds_type: &str, hash: &str) -> String {
    let topic = topic.trim_start_matches('/').trim_end_matches('/');
    format!("{domain}/{topic}/{dds_type}/{hash}")
}

/// A data key, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKey {
    pub domain: u32,
    /// With its leading `/`, as ROS names it.
    pub topic: String,
    /// The DDS type name from the key.
    pub dds_type: String,
    /// `RIHS01_…` or [`NO_HASH`].
    pub hash: String,
}

impl DataKey {
    /// The type, when sensebind knows it (and, with a hash, when the hash matches:
    /// two packages may define a type of the same name).
    pub fn known_type(&self) -> Option<KnownType> {
        let t = KnownType::from_dds_name(&self.dds_type)?;
        (self.hash == NO_HASH || self.hash == t.rihs01()).then_some(t)
    }
}

/// Read an rmw_zenoh data key (`None`: not one).
pub fn parse_data_key(key: &str) -> Option<DataKey> {
    let mut chunks: Vec<&str> = key.split('/').collect();
    let hash = chunks.pop()?;
    let dds_type = chunks.pop()?;
    let hash_ok = hash == NO_HASH
        || hash
            .strip_prefix("RIHS01_")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !hash_ok || !dds_type.contains("::dds_::") || chunks.len() < 2 {
        return None;
    }
    let domain = chunks.remove(0).parse().ok()?;
    Some(DataKey {
        domain,
        topic: format!("/{}", chunks.join("/")),
        dds_type: dds_type.to_string(),
        hash: hash.to_string(),
    })
}

/// The key zenoh-bridge-ros2dds uses for `topic`.
pub fn bridge_key(topic: &str) -> String {
    topic.trim_start_matches('/').to_string()
}

/// The 33-byte attachment rmw_zenoh puts on every sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// From 1, +1 per sample of the publisher.
    pub seq: i64,
    /// Source timestamp, ns since the epoch.
    pub timestamp_ns: i64,
    pub gid: [u8; 16],
}

impl Attachment {
    pub const LEN: usize = 33;

    pub fn encode(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out[..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        out[16] = 16;
        out[17..].copy_from_slice(&self.gid);
        out
    }

    /// The 33-byte form (`None` for anything else: an older or foreign attachment is
    /// not an error, only not read).
    pub fn decode(bytes: &[u8]) -> Option<Attachment> {
        if bytes.len() != Self::LEN || bytes[16] != 16 {
            return None;
        }
        Some(Attachment {
            seq: i64::from_le_bytes(bytes[..8].try_into().ok()?),
            timestamp_ns: i64::from_le_bytes(bytes[8..16].try_into().ok()?),
            gid: bytes[17..].try_into().ok()?,
        })
    }
}

/// A ROS name: letters, digits and `_`, not starting with a digit.
pub fn valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A ROS namespace or topic: `/` followed by `/`-separated [`valid_name`]s (`/` alone
/// is the root namespace).
pub fn valid_namespace(ns: &str) -> bool {
    ns == "/" || ns.strip_prefix('/').is_some_and(|rest| rest.split('/').all(valid_name))
}

/// `name` with every character outside `[A-Za-z0-9_]` replaced by `_`, and `_` put in
/// front of a leading digit: a robot or source id made a ROS name.
pub fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// A name chunk of a liveliness token: `/` → `%`, the empty name → `%`.
pub fn mangle(name: &str) -> String {
    if name.is_empty() {
        "%".into()
    } else {
        name.replace('/', "%")
    }
}

/// What an endpoint token declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// A publisher (`MP`).
    Publisher,
    /// A subscription (`MS`).
    Subscription,
}

/// The node a process's endpoints belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub domain: u32,
    /// The zenoh session's id, as zenoh prints it.
    pub zid: String,
    /// The node's id within the session.
    pub id: u32,
    /// `/sensebind`, or `""`/`/` for the root.
    pub namespace: String,
    pub name: String,
}

impl Node {
    /// The node's own token (`NN`): the node id doubles as the entity id.
    pub fn token(&self) -> String {
        format!(
            "@ros2_lv/{}/{}/{}/{}/NN/%/{}/{}",
            self.domain,
            self.zid,
            self.id,
            self.id,
            mangle(&self.namespace),
            mangle(&self.name)
        )
    }

    /// An endpoint's token: entity `id` of this node, on `topic` with `t`, reliable,
    /// volatile, keep-last `depth`.
    pub fn endpoint_token(
        &self,
        id: u32,
        kind: EndpointKind,
        topic: &str,
        t: KnownType,
        distro: Distro,
        depth: u32,
    ) -> String {
        let kind = match kind {
            EndpointKind::Publisher => "MP",
            EndpointKind::Subscription => "MS",
        };
        format!(
            "@ros2_lv/{}/{}/{}/{id}/{kind}/%/{}/{}/{}/{}/{}/{}",
            self.domain,
            self.zid,
            self.id,
            mangle(&self.namespace),
            mangle(&self.name),
            mangle(topic),
            t.dds_name(),
            t.hash_chunk(distro),
            qos_keep_last(depth)
        )
    }
}

/// rmw_zenoh's QoS chunk for reliable, volatile, keep-last `depth`, no deadline,
/// lifespan or liveliness lease: each field is written only where it differs from
/// rmw_zenoh's default (reliable, volatile, keep-last 42).
pub fn qos_keep_last(depth: u32) -> String {
    if depth == 42 {
        "::,:,:,:,,".into()
    } else {
        format!("::,{depth}:,:,:,,")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_the_ones_rosbags_computes() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ros2/hashes.txt")).unwrap();
        let mut n = 0;
        for line in text.lines() {
            let (name, hash) = line.split_once(' ').unwrap();
            let t = KnownType::from_ros_name(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(t.rihs01(), hash, "{name}");
            n += 1;
        }
        assert_eq!(n, KnownType::ALL.len());
    }

    #[test]
    fn keys_are_rmw_zenohs() {
        let k = data_key(
            0,
            "/camera/image_raw",
            &KnownType::Image.dds_name(),
            KnownType::Image.rihs01(),
        );
        assert_eq!(
            k,
            "0/camera/image_raw/sensor_msgs::msg::dds_::Image_/RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47"
        );
        let p = parse_data_key(&k).unwrap();
        assert_eq!((p.domain, p.topic.as_str()), (0, "/camera/image_raw"));
        assert_eq!(p.known_type(), Some(KnownType::Image));
        // Humble: no hash, the type is still known by name.
        let h = parse_data_key("3/imu/sensor_msgs::msg::dds_::Imu_/TypeHashNotSupported").unwrap();
        assert_eq!(
            (h.domain, h.topic.as_str(), h.known_type()),
            (3, "/imu", Some(KnownType::Imu))
        );
        // Another package's AudioData (same name, another definition): not ours.
        let other = data_key(
            0,
            "/audio",
            "audio_common_msgs::msg::dds_::AudioData_",
            &format!("RIHS01_{}", "0".repeat(64)),
        );
        assert_eq!(parse_data_key(&other).unwrap().known_type(), None);
        for bad in [
            "",
            "0/chatter",
            "x/chatter/std_msgs::msg::dds_::String_/TypeHashNotSupported",
            "0/std_msgs::msg::dds_::String_/TypeHashNotSupported",
            "0/chatter/std_msgs::msg::dds_::String_/RIHS01_abc",
            "0/chatter/String/TypeHashNotSupported",
        ] {
            assert_eq!(parse_data_key(bad), None, "{bad}");
        }
        assert_eq!(
            ros_name("sensor_msgs::msg::dds_::Image_").as_deref(),
            Some("sensor_msgs/msg/Image")
        );
        assert_eq!(
            dds_name("std_msgs/msg/String").as_deref(),
            Some("std_msgs::msg::dds_::String_")
        );
        assert_eq!(bridge_key("/imu/data"), "imu/data");
    }

    #[test]
    fn the_attachment_is_33_bytes_in_rmw_zenohs_layout() {
        let a = Attachment {
            seq: 1,
            timestamp_ns: 1_700_000_000_123_456_789,
            gid: std::array::from_fn(|i| i as u8 + 0xa0),
        };
        let b = a.encode();
        assert_eq!(&b[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[8..16], &1_700_000_000_123_456_789i64.to_le_bytes());
        assert_eq!(b[16], 0x10);
        assert_eq!(b[17], 0xa0);
        assert_eq!(Attachment::decode(&b), Some(a));
        assert_eq!(Attachment::decode(&b[..32]), None);
        let mut odd = b;
        odd[16] = 15;
        assert_eq!(Attachment::decode(&odd), None);
    }

    #[test]
    fn names_are_checked_and_sanitised_as_ros_wants() {
        assert!(valid_name("sensebind") && valid_name("_x1") && !valid_name("1x") && !valid_name("a-b"));
        assert!(valid_namespace("/") && valid_namespace("/sensebind") && valid_namespace("/a/b_2"));
        assert!(!valid_namespace("sensebind") && !valid_namespace("/a//b") && !valid_namespace("/a/"));
        assert_eq!(sanitize("robot-7.lab"), "robot_7_lab");
        assert_eq!(sanitize("7up"), "_7up");
        assert_eq!(sanitize(""), "_");
    }

    #[test]
    fn tokens_are_rmw_zenohs() {
        let node = Node {
            domain: 0,
            zid: "9bf6639dbda12a363e531c995ef12e3f".into(),
            id: 0,
            namespace: "/sensebind".into(),
            name: "sensebind".into(),
        };
        assert_eq!(
            node.token(),
            "@ros2_lv/0/9bf6639dbda12a363e531c995ef12e3f/0/0/NN/%/%sensebind/sensebind"
        );
        assert_eq!(
            node.endpoint_token(
                3,
                EndpointKind::Publisher,
                "/sensebind/r1/labels/vision/front",
                KnownType::String,
                Distro::Jazzy,
                10
            ),
            "@ros2_lv/0/9bf6639dbda12a363e531c995ef12e3f/0/3/MP/%/%sensebind/sensebind/%sensebind%r1%labels%vision%front/std_msgs::msg::dds_::String_/RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18/::,10:,:,:,,"
        );
        let root = Node {
            namespace: String::new(),
            ..node
        };
        assert!(root
            .endpoint_token(
                4,
                EndpointKind::Subscription,
                "/imu",
                KnownType::Imu,
                Distro::Humble,
                42
            )
            .ends_with("/MS/%/%/sensebind/%imu/sensor_msgs::msg::dds_::Imu_/TypeHashNotSupported/::,:,:,:,,"));
    }
}
