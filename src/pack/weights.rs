//! What an encoder's weights weigh: the initializers of its ONNX graph, counted from
//! the protobuf without loading the model (`sensebind check`'s memory estimate).
//!
//! Only the fields needed are read: `ModelProto.graph` (7) → `GraphProto.initializer`
//! (5), and the tensors of nodes' attributes (`Constant` values), → each
//! `TensorProto`'s `dims` (1) and `data_type` (2). Tensor data (inline
//! `raw_data` or an external-data file) is skipped, never read, so a multi-gigabyte
//! encoder is inspected in milliseconds. A file that is not a well-formed ONNX model
//! gives an error naming the byte offset, never a panic.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

/// The weights of one encoder, per element type.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WeightStats {
    /// Initializer tensors.
    pub tensors: u64,
    /// Elements in them (parameters).
    pub params: u64,
    /// Their bytes as stored.
    pub bytes: u64,
    /// Elements per ONNX element type (`float32`, `float16`, `int8`, ...).
    pub params_by_dtype: BTreeMap<String, u64>,
    /// Bytes as stored of the weights not of a floating-point type (int8 of a
    /// quantised pack, int64 shapes): what [`WeightStats::bytes_as`] keeps as it is.
    #[serde(skip)]
    pub other_bytes: u64,
}

/// The floating-point element types: what an fp32 or fp16 pack stores at 4 or 2 bytes.
const FLOATS: [&str; 4] = ["float32", "float16", "bfloat16", "float64"];

impl WeightStats {
    /// Elements of a floating-point type (what an fp32 or fp16 pack stores at 4 or 2
    /// bytes each).
    pub fn float_params(&self) -> u64 {
        FLOATS.iter().filter_map(|f| self.params_by_dtype.get(*f)).sum()
    }

    /// Bytes were every floating-point weight stored at `float_bytes` each (4: fp32,
    /// 2: fp16); other weights as they are.
    pub fn bytes_as(&self, float_bytes: u64) -> u64 {
        self.float_params() * float_bytes + self.other_bytes
    }
}

/// ONNX `TensorProto.DataType` → (name, bits per element).
fn dtype(code: u64) -> Option<(&'static str, u64)> {
    Some(match code {
        1 => ("float32", 32),
        2 => ("uint8", 8),
        3 => ("int8", 8),
        4 => ("uint16", 16),
        5 => ("int16", 16),
        6 => ("int32", 32),
        7 => ("int64", 64),
        9 => ("bool", 8),
        10 => ("float16", 16),
        11 => ("float64", 64),
        12 => ("uint32", 32),
        13 => ("uint64", 64),
        16 => ("bfloat16", 16),
        17..=20 | 23 => ("float8", 8),
        21 => ("uint4", 4),
        22 => ("int4", 4),
        _ => return None,
    })
}

/// Count the initializers of the ONNX model read from `r`.
pub fn inspect<R: Read + Seek>(r: R) -> Result<WeightStats, String> {
    let mut p = Proto::new(r)?;
    let mut stats = WeightStats::default();
    let end = p.len;
    let mut graphs = 0;
    while p.pos < end {
        let (field, wire) = p.key()?;
        if field == 7 && wire == 2 {
            let len = p.varint()?;
            let graph_end = p.end_of(len)?;
            graph(&mut p, graph_end, &mut stats)?;
            graphs += 1;
        } else {
            p.skip(wire)?;
        }
    }
    if graphs == 0 {
        return Err("no graph in it (not an ONNX model)".into());
    }
    Ok(stats)
}

fn graph<R: Read + Seek>(p: &mut Proto<R>, end: u64, stats: &mut WeightStats) -> Result<(), String> {
    while p.pos < end {
        let (field, wire) = p.key()?;
        match (field, wire) {
            // initializer
            (5, 2) => {
                let len = p.varint()?;
                let tensor_end = p.end_of(len)?;
                tensor(p, tensor_end, stats)?;
            }
            // node: a Constant's `value` tensor is a weight too (exporters fold some)
            (1, 2) => {
                let len = p.varint()?;
                let node_end = p.end_of(len)?;
                node(p, node_end, stats)?;
            }
            _ => p.skip(wire)?,
        }
    }
    p.expect_at(end)
}

/// `NodeProto.attribute` (5) → `AttributeProto.t` (5): tensors held by nodes.
fn node<R: Read + Seek>(p: &mut Proto<R>, end: u64, stats: &mut WeightStats) -> Result<(), String> {
    while p.pos < end {
        let (field, wire) = p.key()?;
        if (field, wire) == (5, 2) {
            let len = p.varint()?;
            let attr_end = p.end_of(len)?;
            while p.pos < attr_end {
                let (f, w) = p.key()?;
                if (f, w) == (5, 2) {
                    let len = p.varint()?;
                    let tensor_end = p.end_of(len)?;
                    tensor(p, tensor_end, stats)?;
                } else {
                    p.skip(w)?;
                }
            }
            p.expect_at(attr_end)?;
        } else {
            p.skip(wire)?;
        }
    }
    p.expect_at(end)
}

fn tensor<R: Read + Seek>(p: &mut Proto<R>, end: u64, stats: &mut WeightStats) -> Result<(), String> {
    let at = p.pos;
    let mut elements: u64 = 1;
    let mut code = 0;
    while p.pos < end {
        let (field, wire) = p.key()?;
        match (field, wire) {
            (1, 0) => elements = mul(elements, p.varint()?, at)?,
            (1, 2) => {
                let len = p.varint()?;
                let dims_end = p.end_of(len)?;
                while p.pos < dims_end {
                    elements = mul(elements, p.varint()?, at)?;
                }
                p.expect_at(dims_end)?;
            }
            (2, 0) => code = p.varint()?,
            _ => p.skip(wire)?,
        }
    }
    p.expect_at(end)?;
    let (name, bits) = dtype(code).ok_or_else(|| format!("initializer at byte {at}: unknown element type {code}"))?;
    stats.tensors += 1;
    stats.params += elements;
    let bytes = mul(elements, bits, at)?.div_ceil(8);
    stats.bytes += bytes;
    if !FLOATS.contains(&name) {
        stats.other_bytes += bytes;
    }
    *stats.params_by_dtype.entry(name.to_string()).or_default() += elements;
    Ok(())
}

fn mul(a: u64, b: u64, at: u64) -> Result<u64, String> {
    a.checked_mul(b)
        .ok_or_else(|| format!("initializer at byte {at}: its dimensions overflow"))
}

/// A protobuf reader over a seekable stream, tracking its offset.
struct Proto<R> {
    r: R,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Proto<R> {
    fn new(mut r: R) -> Result<Self, String> {
        let len = r.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
        r.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        Ok(Proto { r, pos: 0, len })
    }

    fn byte(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        self.r
            .read_exact(&mut b)
            .map_err(|_| format!("truncated at byte {}", self.pos))?;
        self.pos += 1;
        Ok(b[0])
    }

    fn varint(&mut self) -> Result<u64, String> {
        let at = self.pos;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("malformed varint at byte {at}"))
    }

    fn key(&mut self) -> Result<(u64, u8), String> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    /// The end offset of a field of `len` bytes starting here, if it fits the file.
    fn end_of(&self, len: u64) -> Result<u64, String> {
        self.pos
            .checked_add(len)
            .filter(|e| *e <= self.len)
            .ok_or_else(|| format!("a field at byte {} runs past the end of the file", self.pos))
    }

    fn seek_to(&mut self, to: u64) -> Result<(), String> {
        self.r.seek(SeekFrom::Start(to)).map_err(|e| e.to_string())?;
        self.pos = to;
        Ok(())
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        let at = self.pos;
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.end_of(8).and_then(|e| self.seek_to(e)),
            2 => {
                let len = self.varint()?;
                let e = self.end_of(len)?;
                self.seek_to(e)
            }
            5 => self.end_of(4).and_then(|e| self.seek_to(e)),
            w => Err(format!("unsupported protobuf wire type {w} at byte {at}")),
        }
    }

    fn expect_at(&self, end: u64) -> Result<(), String> {
        if self.pos == end {
            Ok(())
        } else {
            Err(format!(
                "a field ends at byte {} inside another ending at {end}",
                self.pos
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Protobuf writer for hand-made models.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn field(num: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    fn tensor(dims: &[u64], code: u64, packed: bool) -> Vec<u8> {
        let mut t = Vec::new();
        if packed {
            let mut d = Vec::new();
            for x in dims {
                varint(*x, &mut d);
            }
            field(1, &d, &mut t);
        } else {
            for x in dims {
                varint(1 << 3, &mut t);
                varint(*x, &mut t);
            }
        }
        varint(2 << 3, &mut t);
        varint(code, &mut t);
        field(8, b"w", &mut t); // name
        field(9, &[0u8; 16], &mut t); // raw_data (not read)
        t
    }
    fn model(tensors: &[Vec<u8>]) -> Vec<u8> {
        let mut g = Vec::new();
        let mut node = Vec::new();
        field(4, b"Constant", &mut node); // op_type
        let mut attr = Vec::new();
        field(1, b"value", &mut attr);
        field(5, &tensor(&[3], 1, true), &mut attr);
        field(5, &attr, &mut node);
        field(1, &node, &mut g); // a Constant node holding 3 floats
        for t in tensors {
            field(5, t, &mut g);
        }
        let mut m = Vec::new();
        varint(1 << 3, &mut m); // ir_version
        varint(9, &mut m);
        field(7, &g, &mut m);
        m
    }

    #[test]
    fn counts_initializers_per_type() {
        let m = model(&[
            tensor(&[64, 3, 16, 16], 1, true),
            tensor(&[64], 1, false),
            tensor(&[128, 64], 10, true),
            tensor(&[128, 64], 3, true),
            tensor(&[], 7, true),
        ]);
        let s = inspect(Cursor::new(m)).unwrap();
        assert_eq!(s.tensors, 6);
        assert_eq!(s.params, 3 + 49152 + 64 + 8192 + 8192 + 1);
        assert_eq!(s.bytes, (3 + 49152 + 64) * 4 + 8192 * 2 + 8192 + 8);
        assert_eq!(s.params_by_dtype["float32"], 49219);
        assert_eq!(s.float_params(), 49219 + 8192);
        assert_eq!(s.bytes_as(2), (49219 + 8192) * 2 + 8192 + 8);
        assert_eq!(s.bytes_as(4), (49219 + 8192) * 4 + 8192 + 8);
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let good = model(&[tensor(&[10, 10], 1, true)]);
        // Every truncation, and every single-byte corruption, returns (Ok or Err).
        for n in 0..good.len() {
            let _ = inspect(Cursor::new(good[..n].to_vec()));
            for b in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[n] = b;
                let _ = inspect(Cursor::new(bad));
            }
        }
        assert!(inspect(Cursor::new(Vec::new())).unwrap_err().contains("no graph"));
        let huge = model(&[tensor(&[u64::MAX, 4], 1, true)]);
        assert!(inspect(Cursor::new(huge)).unwrap_err().contains("overflow"));
        let unknown = model(&[tensor(&[2], 99, true)]);
        assert!(inspect(Cursor::new(unknown))
            .unwrap_err()
            .contains("unknown element type 99"));
    }

    #[test]
    fn the_builtin_pack_weighs_what_its_architecture_says() {
        // tools/minibind/train.py prints these parameter counts (M, 2 decimals); the
        // graphs also hold buffers (text's 77×77 causal mask) and folded constants.
        let pack = super::super::Pack::builtin().unwrap();
        let m = |name: &str| {
            let m = crate::modality::Modality::ALL
                .into_iter()
                .find(|x| x.to_string() == name)
                .unwrap();
            match &pack.models[&m] {
                super::super::ModelSource::Embedded(b) => inspect(Cursor::new(*b)).unwrap(),
                super::super::ModelSource::File(_) => unreachable!(),
            }
        };
        for (name, mparams) in [("vision", 0.46), ("text", 1.61), ("audio", 0.13), ("imu", 0.07)] {
            let s = m(name);
            let got = s.params as f64 / 1e6;
            assert!(
                (got - mparams).abs() < 0.02,
                "{name}: {got:.3} M, training said {mparams} M"
            );
            assert_eq!(s.float_params(), s.params_by_dtype["float32"], "{name}: {s:?}");
        }
    }
}
