//! ROS 2 without ROS (issue 22, in progress): the wire formats of ROS 2's zenoh
//! middleware (`rmw_zenoh`) and of `zenoh-bridge-ros2dds`, and ROS 2 messages in CDR.
//! See docs/ros2-design.md for the choices and their evidence.
//!
//! - [`wire`]: the message types sensebind knows with their RIHS01 type hashes, data
//!   keys, the 33-byte sample attachment, and liveliness tokens (what makes
//!   `ros2 topic list` show an endpoint);
//! - [`msgs`]: the messages as serde types (borrowed views for input: an image's
//!   pixels are not copied), decoded and encoded with `hiroz-cdr` behind the 4-byte
//!   encapsulation header;
//! - [`convert`]: those messages as sensebind frames, bounded before allocating.
//!
//! Not yet wired in: the `ros2` source type, the `[ros2]` outputs and rosbag2 replay
//! build on these.

pub mod convert;
pub mod msgs;
pub mod wire;
