//! Sensor calibration (camera intrinsics, depth stereo geometry, IMU biases,
//! extrinsics) in nalgebra types, loaded from TOML (see `calibration/example.toml`).

use nalgebra::{Isometry3, Matrix3, Quaternion, Translation3, UnitQuaternion, Vector3};
use serde::Deserialize;
use std::path::Path;

/// The example calibration, built in as the default.
pub const EXAMPLE_TOML: &str = include_str!("../calibration/example.toml");

#[derive(Debug, thiserror::Error)]
#[error("calibration {source_name}: {reason}")]
pub struct CalibrationError {
    pub source_name: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub camera_size: (u32, u32),
    pub camera_k: Matrix3<f64>,
    pub camera_distortion: [f64; 5],
    pub depth_size: (u32, u32),
    pub depth_baseline_m: f32,
    pub depth_focal_px: f32,
    pub depth_unit_m: f64,
    pub imu_accel_bias: Vector3<f64>,
    pub imu_gyro_bias: Vector3<f64>,
    pub depth_to_camera: Isometry3<f64>,
    pub imu_to_camera: Isometry3<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    camera: RawCamera,
    depth: RawDepth,
    imu: RawImu,
    extrinsics: RawExtrinsics,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    width: u32,
    height: u32,
    fx: f64,
    fy: f64,
    cx: f64,
    cy: f64,
    distortion: [f64; 5],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDepth {
    width: u32,
    height: u32,
    baseline_m: f64,
    focal_px: f64,
    unit_m: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImu {
    accel_bias: [f64; 3],
    gyro_bias: [f64; 3],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtrinsics {
    depth_to_camera: RawPose,
    imu_to_camera: RawPose,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPose {
    rotation: [f64; 4],
    translation: [f64; 3],
}

impl RawPose {
    fn to_isometry(&self, key: &str, src: &str) -> Result<Isometry3<f64>, CalibrationError> {
        let [w, x, y, z] = self.rotation;
        let n = (w * w + x * x + y * y + z * z).sqrt();
        if !(n.is_finite() && (n - 1.0).abs() < 1e-3) {
            return Err(CalibrationError {
                source_name: src.into(),
                reason: format!("`extrinsics.{key}.rotation` must be a unit quaternion [w, x, y, z], norm is {n}"),
            });
        }
        let q = UnitQuaternion::from_quaternion(Quaternion::new(w, x, y, z));
        let t = Translation3::new(self.translation[0], self.translation[1], self.translation[2]);
        Ok(Isometry3::from_parts(t, q))
    }
}

impl Calibration {
    /// Parse calibration TOML; `src` names the origin in errors.
    pub fn parse(text: &str, src: &str) -> Result<Calibration, CalibrationError> {
        let err = |reason: String| CalibrationError {
            source_name: src.into(),
            reason,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let c = &raw.camera;
        if c.fx.is_nan() || c.fy.is_nan() || c.fx <= 0.0 || c.fy <= 0.0 {
            return Err(err("`camera.fx` and `camera.fy` must be > 0".into()));
        }
        let d = &raw.depth;
        if d.baseline_m.is_nan() || d.baseline_m <= 0.0 || d.baseline_m >= 10.0 {
            return Err(err(format!(
                "`depth.baseline_m` must be in (0, 10) metres, got {}",
                d.baseline_m
            )));
        }
        if d.focal_px.is_nan() || d.focal_px <= 0.0 {
            return Err(err(format!("`depth.focal_px` must be > 0, got {}", d.focal_px)));
        }
        if d.unit_m.is_nan() || d.unit_m <= 0.0 {
            return Err(err(format!("`depth.unit_m` must be > 0, got {}", d.unit_m)));
        }
        Ok(Calibration {
            camera_size: (c.width, c.height),
            camera_k: Matrix3::new(c.fx, 0.0, c.cx, 0.0, c.fy, c.cy, 0.0, 0.0, 1.0),
            camera_distortion: c.distortion,
            depth_size: (d.width, d.height),
            depth_baseline_m: d.baseline_m as f32,
            depth_focal_px: d.focal_px as f32,
            depth_unit_m: d.unit_m,
            imu_accel_bias: Vector3::from(raw.imu.accel_bias),
            imu_gyro_bias: Vector3::from(raw.imu.gyro_bias),
            depth_to_camera: raw.extrinsics.depth_to_camera.to_isometry("depth_to_camera", src)?,
            imu_to_camera: raw.extrinsics.imu_to_camera.to_isometry("imu_to_camera", src)?,
        })
    }

    /// Load from a file, or the built-in example when `path` is empty.
    pub fn load(path: &str) -> Result<Calibration, CalibrationError> {
        if path.is_empty() {
            return Self::parse(EXAMPLE_TOML, "built-in calibration/example.toml");
        }
        let text = std::fs::read_to_string(Path::new(path)).map_err(|e| CalibrationError {
            source_name: path.into(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Project a point in the camera frame to pixels (no distortion).
    pub fn project(&self, p: &Vector3<f64>) -> Option<(f64, f64)> {
        if p.z <= 0.0 {
            return None;
        }
        let uv = self.camera_k * (p / p.z);
        Some((uv.x, uv.y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_loads_into_nalgebra_types() {
        let c = Calibration::load("").unwrap();
        assert_eq!(c.camera_size, (640, 480));
        assert!((c.depth_baseline_m - 0.05).abs() < 1e-6);
        let (u, v) = c.project(&Vector3::new(0.0, 0.0, 2.0)).unwrap();
        assert_eq!((u, v), (320.0, 240.0));
        let p = c.depth_to_camera * nalgebra::Point3::new(0.0, 0.0, 1.0);
        assert!((p.x - 0.015).abs() < 1e-12);
    }

    #[test]
    fn bad_values_name_the_key() {
        let bad = EXAMPLE_TOML.replace("baseline_m = 0.050", "baseline_m = -1.0");
        let e = Calibration::parse(&bad, "cal.toml").unwrap_err().to_string();
        assert!(e.contains("cal.toml") && e.contains("depth.baseline_m"), "{e}");
        let bad = EXAMPLE_TOML.replace(
            "rotation = [1.0, 0.0, 0.0, 0.0]\ntranslation = [0.015",
            "rotation = [2.0, 0.0, 0.0, 0.0]\ntranslation = [0.015",
        );
        let e = Calibration::parse(&bad, "cal.toml").unwrap_err().to_string();
        assert!(e.contains("depth_to_camera.rotation"), "{e}");
    }
}
