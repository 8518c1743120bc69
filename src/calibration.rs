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
    /// IMU frame → body frame; the body frame is the camera (head) frame unless
    /// `[extrinsics.imu_to_body]` says otherwise.
    pub imu_to_body: Isometry3<f64>,
    /// Radiometric scaling of raw Y16 thermal counts (`[thermal]`), when given.
    pub thermal: Option<Radiometry>,
}

/// Raw thermal counts → kelvin: `K = counts × kelvin_per_count + kelvin_offset`
/// (a Lepton in TLinear high-resolution mode: 0.01 K per count, offset 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Radiometry {
    pub kelvin_per_count: f64,
    pub kelvin_offset: f64,
}

impl Radiometry {
    /// The raw count that reads `kelvin`.
    pub fn counts_at(&self, kelvin: f64) -> f64 {
        (kelvin - self.kelvin_offset) / self.kelvin_per_count
    }
}

/// IMU correction: readings minus the static biases, rotated into the body frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImuCorrection {
    pub accel_bias: Vector3<f64>,
    pub gyro_bias: Vector3<f64>,
    pub rotation: UnitQuaternion<f64>,
}

impl ImuCorrection {
    /// Whether applying it changes nothing (zero biases, identity rotation).
    pub fn is_identity(&self) -> bool {
        self.accel_bias == Vector3::zeros() && self.gyro_bias == Vector3::zeros() && self.rotation.angle() == 0.0
    }

    /// A sample (accel m/s², gyro rad/s) in the body frame: `R · (accel − b_a)`,
    /// `R · (gyro − b_g)`.
    pub fn apply(&self, accel: [f32; 3], gyro: [f32; 3]) -> ([f32; 3], [f32; 3]) {
        let v = |a: [f32; 3]| Vector3::new(a[0] as f64, a[1] as f64, a[2] as f64);
        let out = |v: Vector3<f64>| [v.x as f32, v.y as f32, v.z as f32];
        (
            out(self.rotation * (v(accel) - self.accel_bias)),
            out(self.rotation * (v(gyro) - self.gyro_bias)),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    camera: RawCamera,
    depth: RawDepth,
    imu: RawImu,
    extrinsics: RawExtrinsics,
    thermal: Option<RawThermal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThermal {
    kelvin_per_count: f64,
    #[serde(default)]
    kelvin_offset: f64,
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
    imu_to_body: Option<RawPose>,
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
        if let Some(t) = &raw.thermal {
            if !(t.kelvin_per_count.is_finite() && t.kelvin_per_count > 0.0 && t.kelvin_offset.is_finite()) {
                return Err(err(format!(
                    "`thermal.kelvin_per_count` must be > 0 and `thermal.kelvin_offset` finite, got {} and {}",
                    t.kelvin_per_count, t.kelvin_offset
                )));
            }
        }
        let imu_to_camera = raw.extrinsics.imu_to_camera.to_isometry("imu_to_camera", src)?;
        let imu_to_body = match &raw.extrinsics.imu_to_body {
            Some(p) => p.to_isometry("imu_to_body", src)?,
            None => imu_to_camera,
        };
        for (k, b) in [
            ("imu.accel_bias", raw.imu.accel_bias),
            ("imu.gyro_bias", raw.imu.gyro_bias),
        ] {
            if !b.iter().all(|v| v.is_finite()) {
                return Err(err(format!("`{k}` must be finite, got {b:?}")));
            }
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
            imu_to_camera,
            imu_to_body,
            thermal: raw.thermal.map(|t| Radiometry {
                kelvin_per_count: t.kelvin_per_count,
                kelvin_offset: t.kelvin_offset,
            }),
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

    /// The IMU correction (biases, rotation into the body frame).
    pub fn imu_correction(&self) -> ImuCorrection {
        ImuCorrection {
            accel_bias: self.imu_accel_bias,
            gyro_bias: self.imu_gyro_bias,
            rotation: self.imu_to_body.rotation,
        }
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
    fn imu_samples_are_bias_corrected_and_rotated_into_the_body_frame() {
        // IMU mounted rotated 90° about z: its x axis is the body's y axis.
        let text = format!(
            "{EXAMPLE_TOML}\n[extrinsics.imu_to_body]\nrotation = [{c}, 0.0, 0.0, {c}]\ntranslation = [0.0, 0.0, 0.0]\n",
            c = std::f64::consts::FRAC_1_SQRT_2
        )
        .replace("accel_bias = [0.0, 0.0, 0.0]", "accel_bias = [0.1, -0.2, 0.05]")
        .replace("gyro_bias = [0.0, 0.0, 0.0]", "gyro_bias = [0.01, 0.02, -0.03]");
        let c = Calibration::parse(&text, "cal.toml").unwrap();
        let corr = c.imu_correction();
        assert!(!corr.is_identity());
        let (accel, gyro) = corr.apply([1.1, -0.2, 9.86], [0.01, 0.52, -0.03]);
        // accel − bias = (1, 0, 9.81); rotated: (0, 1, 9.81). gyro − bias = (0, 0.5, 0) → (−0.5, 0, 0).
        let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(accel, [0.0, 1.0, 9.81]), "{accel:?}");
        assert!(close(gyro, [-0.5, 0.0, 0.0]), "{gyro:?}");
        // Without `imu_to_body`, the body frame is the camera frame (identity in the example).
        assert!(Calibration::load("").unwrap().imu_correction().is_identity());
    }

    /// A mount that touches every axis: 120° about (1, 1, 1)/√3, the unit quaternion
    /// [w, x, y, z] = [½, ½, ½, ½], turns x into y, y into z and z into x, so
    /// R·(a, b, c) = (c, a, b) — worked out by hand, not with nalgebra.
    #[test]
    fn imu_correction_subtracts_the_biases_then_rotates_about_every_axis() {
        let mount = "rotation = [0.5, 0.5, 0.5, 0.5]\ntranslation = [0.0, 0.0, 0.0]\n";
        let biased = EXAMPLE_TOML
            .replace("accel_bias = [0.0, 0.0, 0.0]", "accel_bias = [0.1, -0.2, 0.3]")
            .replace("gyro_bias = [0.0, 0.0, 0.0]", "gyro_bias = [0.01, 0.02, 0.03]");
        let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        // accel (1.1, 1.8, 10.11) − (0.1, −0.2, 0.3) = (1, 2, 9.81) → (9.81, 1, 2);
        // gyro (0.11, −0.48, 0.03) − (0.01, 0.02, 0.03) = (0.1, −0.5, 0) → (0, 0.1, −0.5).
        let reading = ([1.1f32, 1.8, 10.11], [0.11f32, -0.48, 0.03]);
        let (want_a, want_g) = ([9.81f32, 1.0, 2.0], [0.0f32, 0.1, -0.5]);

        // Through `[extrinsics.imu_to_body]`.
        let c = Calibration::parse(&format!("{biased}\n[extrinsics.imu_to_body]\n{mount}"), "c").unwrap();
        let (a, g) = c.imu_correction().apply(reading.0, reading.1);
        assert!(close(a, want_a) && close(g, want_g), "{a:?} {g:?}");

        // Without it the body frame is the camera frame: the IMU→camera rotation is used.
        let via_camera = biased.replace(
            "[extrinsics.imu_to_camera]\nrotation = [1.0, 0.0, 0.0, 0.0]\ntranslation = [0.0, -0.005, -0.01]\n",
            &format!("[extrinsics.imu_to_camera]\n{mount}"),
        );
        assert_ne!(via_camera, biased, "the example's imu_to_camera section was replaced");
        let c = Calibration::parse(&via_camera, "c").unwrap();
        let (a, g) = c.imu_correction().apply(reading.0, reading.1);
        assert!(close(a, want_a) && close(g, want_g), "{a:?} {g:?}");

        // `imu_to_body` wins over `imu_to_camera`: identity here, biases only.
        let c = Calibration::parse(
            &format!(
                "{via_camera}\n[extrinsics.imu_to_body]\nrotation = [1.0, 0.0, 0.0, 0.0]\ntranslation = [0.0, 0.0, 0.0]\n"
            ),
            "c",
        )
        .unwrap();
        let (a, g) = c.imu_correction().apply(reading.0, reading.1);
        assert!(close(a, [1.0, 2.0, 9.81]) && close(g, [0.1, -0.5, 0.0]), "{a:?} {g:?}");
        assert!(!c.imu_correction().is_identity(), "biases alone are a correction");

        // The rotation alone (no biases) is not the identity either, and the inverse
        // mount [½, −½, −½, −½] undoes it: z → y → x.
        let c = Calibration::parse(&format!("{EXAMPLE_TOML}\n[extrinsics.imu_to_body]\n{mount}"), "c").unwrap();
        assert!(!c.imu_correction().is_identity());
        let (a, _) = c.imu_correction().apply([1.0, 2.0, 3.0], [0.0; 3]);
        assert!(close(a, [3.0, 1.0, 2.0]), "{a:?}");
        let inverse = mount.replace("[0.5, 0.5, 0.5, 0.5]", "[0.5, -0.5, -0.5, -0.5]");
        let c = Calibration::parse(&format!("{EXAMPLE_TOML}\n[extrinsics.imu_to_body]\n{inverse}"), "c").unwrap();
        let (a, _) = c.imu_correction().apply([3.0, 1.0, 2.0], [0.0; 3]);
        assert!(close(a, [1.0, 2.0, 3.0]), "{a:?}");
    }

    #[test]
    fn thermal_radiometry_is_optional_and_checked() {
        assert!(Calibration::load("").unwrap().thermal.is_none());
        let c = Calibration::parse(&format!("{EXAMPLE_TOML}\n[thermal]\nkelvin_per_count = 0.01\n"), "c").unwrap();
        let r = c.thermal.unwrap();
        assert!((r.counts_at(300.0) - 30000.0).abs() < 1e-9);
        let e = Calibration::parse(&format!("{EXAMPLE_TOML}\n[thermal]\nkelvin_per_count = 0.0\n"), "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("thermal.kelvin_per_count"), "{e}");
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
