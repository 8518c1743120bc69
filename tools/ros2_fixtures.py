"""Record the ROS 2 CDR fixtures in tests/fixtures/ros2 with rosbags (an independent
implementation of ROS 2's CDR and RIHS01 type hashes). Run with a Python that has
`rosbags==0.11.9`:  python tools/ros2_fixtures.py

Each `<name>.cdr` is one serialized message, encapsulation header included;
`hashes.txt` lists `<type> <RIHS01>` as rosbags computes it (Jazzy store, audio types
registered from their .msg text as ros-drivers/audio_common defines them).
"""
from pathlib import Path

import numpy as np
from rosbags.typesys import Stores, get_typestore, get_types_from_msg

OUT = Path(__file__).resolve().parents[1] / "tests/fixtures/ros2"
ts = get_typestore(Stores.ROS2_JAZZY)
ts.register(get_types_from_msg("uint8[] data", "audio_common_msgs/msg/AudioData"))
ts.register(
    get_types_from_msg(
        "std_msgs/Header header\naudio_common_msgs/AudioData audio", "audio_common_msgs/msg/AudioDataStamped"
    )
)
# sensebind's own message, from the interface package in the repo.
ROOT = Path(__file__).resolve().parents[1]
ts.register(get_types_from_msg((ROOT / "ros/sensebind_msgs/msg/Embedding.msg").read_text(),
                               "sensebind_msgs/msg/Embedding"))
T = ts.types
Time = T["builtin_interfaces/msg/Time"]
Header = T["std_msgs/msg/Header"]


def header(sec, nsec, frame):
    return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame)


def save(name, msg, typename, big_endian=False):
    data = ts.serialize_cdr(msg, typename, little_endian=not big_endian)
    (OUT / f"{name}.cdr").write_bytes(bytes(data))


Image = T["sensor_msgs/msg/Image"]
# 2×3 rgb8 rows padded to step 12 (3 bytes of padding per row): pixels 0..17.
rows = [bytes(range(r * 9, r * 9 + 9)) + b"\xee\xee\xee" for r in range(2)]
save("image_rgb8_padded", Image(header=header(1, 200_000_000, "cam"), height=2, width=3, encoding="rgb8",
                                is_bigendian=0, step=12, data=np.frombuffer(b"".join(rows), dtype=np.uint8)),
     "sensor_msgs/msg/Image")
# 2×2 16UC1 big-endian depth, in a big-endian CDR message.
depth = np.array([1000, 2000, 3000, 65535], dtype=">u2").tobytes()
save("image_16uc1_be", Image(header=header(7, 5, "depth"), height=2, width=2, encoding="16UC1", is_bigendian=1,
                             step=4, data=np.frombuffer(depth, dtype=np.uint8)), "sensor_msgs/msg/Image",
     big_endian=True)
CompressedImage = T["sensor_msgs/msg/CompressedImage"]
save("compressed_jpeg", CompressedImage(header=header(3, 0, "cam"), format="jpeg",
                                        data=np.frombuffer(b"\xff\xd8\xff\xe0fakejpeg\xff\xd9", dtype=np.uint8)),
     "sensor_msgs/msg/CompressedImage")
Imu = T["sensor_msgs/msg/Imu"]
Q, V3 = T["geometry_msgs/msg/Quaternion"], T["geometry_msgs/msg/Vector3"]
cov = np.arange(9, dtype=np.float64)
save("imu", Imu(header=header(12, 345_678_901, "imu_link"), orientation=Q(x=0.0, y=0.0, z=0.0, w=1.0),
                orientation_covariance=cov, angular_velocity=V3(x=0.1, y=-0.2, z=0.3),
                angular_velocity_covariance=cov, linear_acceleration=V3(x=0.5, y=-9.81, z=1.25),
                linear_acceleration_covariance=cov), "sensor_msgs/msg/Imu")
AudioData, AudioDataStamped = T["audio_common_msgs/msg/AudioData"], T["audio_common_msgs/msg/AudioDataStamped"]
pcm = np.array([0, 1000, -1000, 32767, -32768], dtype="<i2").tobytes()
save("audio_data", AudioData(data=np.frombuffer(pcm, dtype=np.uint8)), "audio_common_msgs/msg/AudioData")
save("audio_data_stamped", AudioDataStamped(header=header(5, 500, "mic"),
                                            audio=AudioData(data=np.frombuffer(pcm, dtype=np.uint8))),
     "audio_common_msgs/msg/AudioDataStamped")
String = T["std_msgs/msg/String"]
save("string", String(data='{"robot":"r1","top":[]}'), "std_msgs/msg/String")

Embedding = T["sensebind_msgs/msg/Embedding"]
save("embedding", Embedding(header=header(1, 500, "front"), end=Time(sec=3, nanosec=500), robot="r1", source="front",
                            modality="vision", seq=7, model="minibind", scale=100.0, coverage=0.75,
                            embedding=np.array([0.6, 0.8], dtype=np.float32)), "sensebind_msgs/msg/Embedding")
DA, DS, KV = (T["diagnostic_msgs/msg/DiagnosticArray"], T["diagnostic_msgs/msg/DiagnosticStatus"],
              T["diagnostic_msgs/msg/KeyValue"])
save("diagnostics", DA(header=header(10, 0, ""), status=[
    DS(level=1, name="sensebind/r1/front", message="stalled", hardware_id="r1",
       values=[KV(key="frames", value="12"), KV(key="errors", value="0")]),
    DS(level=0, name="sensebind/r1/front/vision", message="ok", hardware_id="r1", values=[])]),
     "diagnostic_msgs/msg/DiagnosticArray")

names = ["sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Imu", "std_msgs/msg/String",
         "diagnostic_msgs/msg/DiagnosticArray", "audio_common_msgs/msg/AudioData",
         "audio_common_msgs/msg/AudioDataStamped", "sensebind_msgs/msg/Embedding"]
(OUT / "hashes.txt").write_text("".join(f"{n} {ts.hash_rihs01(n)}\n" for n in names))
print(sorted(p.name for p in OUT.iterdir()))
