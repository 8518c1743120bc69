//! The ONNX Runtime engine reproduces the reference outputs recorded for the bundled
//! tiny pack packs/tiny-random (tests/fixtures/tiny_pack_ref.json, made by tools/make_pack_fixture.py
//! with Python onnxruntime), for all six encoders.

use crate::common;

use sensebind::config::Config;
use sensebind::engine::ort_backend::OrtEncoder;
use sensebind::engine::Encoder;
use sensebind::pack::Pack;
use sensebind::preprocess::ModelInput;
use sensebind::Modality;

#[test]
fn engine_matches_reference_outputs_for_every_modality() {
    common::require_ort();
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/tiny_pack_ref.json")).unwrap();
    let cfg = Config::load_with_env(None, Vec::new()).unwrap();
    let pack = Pack::load(concat!(env!("CARGO_MANIFEST_DIR"), "/packs/tiny-random")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for m in Modality::ALL {
        let f = &fixture["modalities"][m.as_str()];
        let enc = OrtEncoder::load(&pack, m, &cfg.engine, dir.path()).unwrap();
        let numel: usize = enc.input_shape().iter().product();
        let input = if m == Modality::Text {
            ModelInput::I64(
                f["input"]["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect(),
            )
        } else {
            let v: Vec<f32> = (0..numel).map(|i| ((0.001 * i as f64).sin() * 0.5) as f32).collect();
            let sum: f64 = v.iter().map(|x| *x as f64).sum();
            assert!(
                (sum - f["input"]["sum"].as_f64().unwrap()).abs() < 1e-3,
                "{m}: input generator drifted"
            );
            ModelInput::F32(v)
        };
        let out = enc.encode(&[input]).unwrap().remove(0);
        let want: Vec<f64> = f["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let norm = f["l2_norm"].as_f64().unwrap();
        assert!(
            (norm - f["logit_scale"].as_f64().unwrap()).abs() < 1e-4,
            "{m}: reference norm is the logit scale"
        );
        assert_eq!(out.len(), want.len(), "{m}");
        let max_diff = out
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b / norm).abs())
            .fold(0.0, f64::max);
        assert!(max_diff < 1e-5, "{m}: max |Δ| {max_diff}");
        assert!((enc.logit_scale() as f64 - norm).abs() < 1e-4);
    }
}

/// The real encoders give the same vector for an item whether it runs alone or in a
/// batch (the daemon batches whatever is queued).
#[test]
fn batched_inference_equals_one_by_one() {
    common::require_ort();
    let cfg = Config::load_with_env(None, Vec::new()).unwrap();
    let pack = Pack::load(concat!(env!("CARGO_MANIFEST_DIR"), "/packs/tiny-random")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for m in Modality::ALL {
        let enc = OrtEncoder::load(&pack, m, &cfg.engine, dir.path()).unwrap();
        let numel: usize = enc.input_shape().iter().product();
        let items: Vec<ModelInput> = (0..4)
            .map(|k| {
                if m == Modality::Text {
                    let mut ids = vec![0i64; numel];
                    ids[0] = 49406;
                    ids[1] = 320 + k as i64 * 17;
                    ids[2] = 49407;
                    ModelInput::I64(ids)
                } else {
                    ModelInput::F32(
                        (0..numel)
                            .map(|i| ((0.003 * i as f64 + k as f64).sin() * 0.7) as f32)
                            .collect(),
                    )
                }
            })
            .collect();
        let batched = enc.encode(&items).unwrap();
        assert_eq!(batched.len(), 4);
        for (k, item) in items.iter().enumerate() {
            let single = enc.encode(std::slice::from_ref(item)).unwrap().remove(0);
            let d = single
                .iter()
                .zip(&batched[k])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(d < 1e-5, "{m} item {k}: batched vs alone max|Δ| {d}");
        }
        assert_ne!(batched[0], batched[1], "{m}: different inputs give different vectors");
    }
}
