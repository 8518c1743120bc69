"""A stand-in for a ROS 2 node on rmw_zenoh, with no ROS installation: rosbags
serializes the messages and computes the RIHS01 type hashes, eclipse-zenoh carries
them with the keys, attachments and liveliness tokens rmw_zenoh writes
(docs/ros2-design.md §3). Also the zenoh-bridge-ros2dds mapping (topic as key, no
attachment, the bridge's own publisher token).
"""
import json
import os
import struct

import numpy as np
import zenoh
from rosbags.typesys import Stores, get_typestore, get_types_from_msg

STORE = get_typestore(Stores.ROS2_JAZZY)
STORE.register(get_types_from_msg("uint8[] data", "audio_common_msgs/msg/AudioData"))
STORE.register(
    get_types_from_msg(
        "std_msgs/Header header\naudio_common_msgs/AudioData audio", "audio_common_msgs/msg/AudioDataStamped"
    )
)
T = STORE.types
NO_HASH = "TypeHashNotSupported"


def _session(mode, port, **keys):
    """A loopback session of `mode` on `port` (listening for a router, connecting
    otherwise), multicast scouting off, plus the JSON5 `keys` (`/` for `__`)."""
    conf = zenoh.Config()
    conf.insert_json5("mode", json.dumps(mode))
    endpoints = "listen/endpoints" if mode == "router" else "connect/endpoints"
    conf.insert_json5(endpoints, json.dumps([f"tcp/127.0.0.1:{port}"]))
    conf.insert_json5("scouting/multicast/enabled", "false")
    for k, v in keys.items():
        conf.insert_json5(k.replace("__", "/"), v)
    return zenoh.open(conf)


def router(port):
    """A zenoh router on loopback `port` (the robot's `rmw_zenohd`)."""
    return _session("router", port)


def rmw_session(port):
    """A session as rmw_zenoh opens one: a peer with gossip scouting, connected to the
    router."""
    return _session("peer", port, listen__endpoints='["tcp/127.0.0.1:0"]', scouting__gossip__enabled="true")


def client_session(port):
    return _session("client", port)


def dds_name(ros_type):
    pkg, kind, name = ros_type.split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


def mangle(s):
    return s.replace("/", "%") if s else "%"


def header(t_ns, frame_id=""):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000),
        frame_id=frame_id,
    )


def u8(b):
    return np.frombuffer(bytes(b), dtype=np.uint8)


class Node:
    """A node `name` in `namespace` on `domain`, as rmw_zenoh declares one."""

    def __init__(self, session, name="standin", namespace="/", domain=0, humble=False):
        self.session, self.name, self.namespace, self.domain, self.humble = session, name, namespace, domain, humble
        self.zid = str(session.info.zid())
        self.next_id = 1
        self.token = session.liveliness().declare_token(
            f"@ros2_lv/{domain}/{self.zid}/0/0/NN/%/{mangle(namespace)}/{name}"
        )

    def hash_of(self, ros_type):
        return NO_HASH if self.humble else STORE.hash_rihs01(ros_type)

    def publisher(self, topic, ros_type, block=False):
        """`block`: congestion control Block (every sample reaches the subscriber)."""
        return Publisher(self, topic, ros_type, block)


class Publisher:
    def __init__(self, node, topic, ros_type, block=False):
        self.node, self.topic, self.ros_type = node, topic, ros_type
        self.key = f"{node.domain}/{topic.lstrip('/')}/{dds_name(ros_type)}/{node.hash_of(ros_type)}"
        eid = node.next_id
        node.next_id += 1
        self.token = node.session.liveliness().declare_token(
            f"@ros2_lv/{node.domain}/{node.zid}/0/{eid}/MP/%/{mangle(node.namespace)}/{node.name}/"
            f"{mangle(topic)}/{dds_name(ros_type)}/{node.hash_of(ros_type)}/::,10:,:,:,,"
        )
        cc = zenoh.CongestionControl.BLOCK if block else zenoh.CongestionControl.DROP
        self.pub = node.session.declare_publisher(self.key, congestion_control=cc)
        self.gid = os.urandom(16)
        self.seq = 0

    def put_raw(self, payload, t_ns):
        self.seq += 1
        att = struct.pack("<qqB16s", self.seq, t_ns, 16, self.gid)
        self.pub.put(bytes(payload), attachment=att)

    def publish(self, msg, t_ns):
        self.put_raw(STORE.serialize_cdr(msg, self.ros_type), t_ns)


class BridgePublisher:
    """What zenoh-bridge-ros2dds puts on zenoh for a DDS publisher of `topic`."""

    def __init__(self, session, topic, ros_type, announce=True):
        self.session, self.ros_type = session, ros_type
        self.key = topic.lstrip("/")
        zid = str(session.info.zid())
        self.token = (
            session.liveliness().declare_token(
                f"@/{zid}/@ros2_lv/MP/{self.key.replace('/', '§')}/{ros_type.replace('/', '§')}/:1:0:1,10"
            )
            if announce
            else None
        )
        self.pub = session.declare_publisher(self.key)

    def publish(self, msg, t_ns=None):
        self.pub.put(bytes(STORE.serialize_cdr(msg, self.ros_type)))


# ------------------------------------------------------------------ messages


def image(t_ns, rgb, encoding):
    """An Image of `rgb` (h×w×3 uint8) in `encoding` (rows padded by 4 bytes)."""
    h, w, _ = rgb.shape
    if encoding == "rgb8":
        px = rgb
    elif encoding == "bgr8":
        px = rgb[:, :, ::-1]
    elif encoding == "rgba8":
        px = np.dstack([rgb, np.full((h, w), 255, np.uint8)])
    elif encoding == "bgra8":
        px = np.dstack([rgb[:, :, ::-1], np.full((h, w), 7, np.uint8)])
    elif encoding == "mono8":
        px = rgb[:, :, 0]
    else:
        raise ValueError(encoding)
    rows = px.reshape(h, -1)
    padded = np.hstack([rows, np.full((h, 4), 0xEE, np.uint8)])
    return T["sensor_msgs/msg/Image"](
        header=header(t_ns, "cam"), height=h, width=w, encoding=encoding, is_bigendian=0,
        step=padded.shape[1], data=u8(padded.tobytes()),
    )


def image16(t_ns, mm, encoding, big_endian=False):
    """A depth/thermal Image of `mm` (h×w uint16): 16UC1/mono16, or 32FC1 in metres."""
    h, w = mm.shape
    if encoding == "32FC1":
        data = (mm.astype(np.float32) / 1000.0).astype(">f4" if big_endian else "<f4").tobytes()
        step = w * 4
    else:
        data = mm.astype(">u2" if big_endian else "<u2").tobytes()
        step = w * 2
    return T["sensor_msgs/msg/Image"](
        header=header(t_ns, "depth"), height=h, width=w, encoding=encoding, is_bigendian=int(big_endian),
        step=step, data=u8(data),
    )


def compressed(t_ns, jpeg_bytes):
    return T["sensor_msgs/msg/CompressedImage"](header=header(t_ns, "cam"), format="jpeg", data=u8(jpeg_bytes))


def imu(t_ns, accel, gyro):
    Q, V3 = T["geometry_msgs/msg/Quaternion"], T["geometry_msgs/msg/Vector3"]
    cov = np.zeros(9, dtype=np.float64)
    return T["sensor_msgs/msg/Imu"](
        header=header(t_ns, "imu_link"), orientation=Q(x=0.0, y=0.0, z=0.0, w=1.0), orientation_covariance=cov,
        angular_velocity=V3(x=float(gyro[0]), y=float(gyro[1]), z=float(gyro[2])), angular_velocity_covariance=cov,
        linear_acceleration=V3(x=float(accel[0]), y=float(accel[1]), z=float(accel[2])),
        linear_acceleration_covariance=cov,
    )


def audio_stamped(t_ns, pcm_s16):
    return T["audio_common_msgs/msg/AudioDataStamped"](
        header=header(t_ns, "mic"), audio=T["audio_common_msgs/msg/AudioData"](data=u8(pcm_s16.astype("<i2").tobytes()))
    )


def audio(pcm_s16):
    return T["audio_common_msgs/msg/AudioData"](data=u8(pcm_s16.astype("<i2").tobytes()))
