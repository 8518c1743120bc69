//! ROS 2 without ROS: the wire formats of ROS 2's zenoh middleware (`rmw_zenoh`) and of
//! `zenoh-bridge-ros2dds`, ROS 2 messages in CDR, and sensebind's node on the bus.
//! See docs/ros2-design.md for the choices and their evidence.
//!
//! - [`wire`]: the message types sensebind knows with their RIHS01 type hashes, data
//!   keys, the 33-byte sample attachment, and liveliness tokens (what makes
//!   `ros2 topic list` show an endpoint);
//! - [`msgs`]: the messages as serde types (borrowed views for input: an image's
//!   pixels are not copied), decoded and encoded with `hiroz-cdr` behind the 4-byte
//!   encapsulation header;
//! - [`node`]: the one ROS 2 node of the process, shared by the `ros2` sources
//!   ([`crate::sources::ros2`], which turn messages into frames) and the ROS 2 outputs.

pub mod msgs;
pub mod node;
pub mod wire;
