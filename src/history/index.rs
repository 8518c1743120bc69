//! Exact top-k search over the history with a small in-memory index.
//!
//! Every vector is kept twice: exactly (f32, on disk) and as int8 codes in memory
//! (one byte a dimension, a quarter of f32; per-vector symmetric scale). A search
//! scores every code against the query's codes (an integer dot product, vectorised),
//! and bounds the error of that approximation for each vector:
//!
//! |a·b − â·b̂| ≤ ‖a − â‖·‖b‖ + ‖â‖·‖b − b̂‖, with ‖b‖ = 1,
//!
//! using each vector's stored residual norm ‖a − â‖ and code norm ‖â‖. The k-th
//! largest lower bound is a threshold no true top-k score is below; only vectors
//! whose upper bound reaches it are re-scored exactly from disk. The result is the
//! exact top-k, with the exact f32 cosines (the ones a client computes from the
//! published embeddings), not an approximation. docs/performance.md, "History",
//! has the measurements that chose this over brute force in f32.

/// A vector's int8 codes and what bounds their error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quant {
    /// x ≈ scale · code
    pub scale: f32,
    /// ‖x − scale · code‖
    pub residual: f32,
    /// ‖scale · code‖
    pub norm: f32,
}

/// Quantise `x` into `codes` (same length).
pub fn quantise(x: &[f32], codes: &mut [i8]) -> Quant {
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 && max.is_finite() { max / 127.0 } else { 1.0 };
    let (mut r2, mut n2) = (0.0f64, 0.0f64);
    for (c, v) in codes.iter_mut().zip(x) {
        let q = if v.is_finite() {
            (v / scale).round().clamp(-127.0, 127.0)
        } else {
            0.0
        };
        *c = q as i8;
        let back = q * scale;
        r2 += ((v - back) as f64).powi(2);
        n2 += (back as f64).powi(2);
    }
    Quant {
        scale,
        residual: r2.sqrt() as f32,
        norm: n2.sqrt() as f32,
    }
}

/// Σ a·b over int8 codes (exact in i32 for dims up to 133 000).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { dot_i8_avx2(a, b) };
        }
    }
    dot_i8_plain(a, b)
}

#[inline(always)]
fn dot_i8_plain(a: &[i8], b: &[i8]) -> i32 {
    // Sixteen lanes of i16 products summed into i32: the shape LLVM turns into
    // pmaddwd (x86) or smlal (NEON).
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] as i16 as i32 * y[i] as i16 as i32;
        }
    }
    let tail: i32 = ra.iter().zip(rb).map(|(x, y)| *x as i32 * *y as i32).sum();
    acc.iter().sum::<i32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    dot_i8_plain(a, b)
}

/// Σ a·b in f32, in order (what a client's loop computes).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One vector's approximate score and its error bound.
#[derive(Debug, Clone, Copy)]
pub struct Approx {
    pub id: usize,
    pub score: f32,
    pub bound: f32,
}

/// Rounding slack on top of the bound (the f32 arithmetic of both sides).
const SLACK: f32 = 1e-4;

/// The ids that can be in the exact top-`k` of `approx`: every one whose upper bound
/// reaches the `k`-th largest lower bound. Best upper bound first.
pub fn candidates(approx: &[Approx], k: usize) -> Vec<Approx> {
    let mut out: Vec<Approx> = if approx.len() <= k {
        approx.to_vec()
    } else {
        let mut lower: Vec<f32> = approx.iter().map(|a| a.score - a.bound - SLACK).collect();
        let (_, kth, _) = lower.select_nth_unstable_by(k - 1, |x, y| y.total_cmp(x));
        let tau = *kth;
        approx
            .iter()
            .filter(|a| a.score + a.bound + SLACK >= tau)
            .copied()
            .collect()
    };
    out.sort_by(|x, y| (y.score + y.bound).total_cmp(&(x.score + x.bound)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    fn unit(seed: &mut u64, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| lcg(seed)).collect();
        crate::engine::l2_normalise(&mut v);
        v
    }

    #[test]
    fn the_dot_kernels_agree_and_the_bound_holds() {
        let mut seed = 7;
        for dim in [1, 15, 16, 17, 512, 1024, 1030] {
            let (a, b) = (unit(&mut seed, dim), unit(&mut seed, dim));
            let (mut ca, mut cb) = (vec![0i8; dim], vec![0i8; dim]);
            let (qa, qb) = (quantise(&a, &mut ca), quantise(&b, &mut cb));
            let plain: i32 = ca.iter().zip(&cb).map(|(x, y)| *x as i32 * *y as i32).sum();
            assert_eq!(dot_i8(&ca, &cb), plain, "dim {dim}");
            assert_eq!(dot_i8_plain(&ca, &cb), plain);
            let approx = qa.scale * qb.scale * plain as f32;
            let bound = qa.residual + qa.norm * qb.residual;
            assert!((approx - dot_f32(&a, &b)).abs() <= bound + SLACK, "dim {dim}");
        }
        // Extremes: ±127 codes over 1024 dims stay exact in i32.
        let big = vec![-127i8; 1024];
        assert_eq!(dot_i8(&big, &big), 127 * 127 * 1024);
        // Zero and non-finite vectors quantise without dividing by zero.
        let mut c = vec![0i8; 3];
        let q = quantise(&[0.0, f32::NAN, 0.0], &mut c);
        assert_eq!((c, q.norm), (vec![0, 0, 0], 0.0));
    }

    #[test]
    fn candidates_always_hold_the_exact_top_k() {
        let mut seed = 3;
        let dim = 64;
        let q = unit(&mut seed, dim);
        let mut cq = vec![0i8; dim];
        let qq = quantise(&q, &mut cq);
        // Near-duplicates make the approximations tie: the hard case.
        let base = unit(&mut seed, dim);
        let db: Vec<Vec<f32>> = (0..3000)
            .map(|i| {
                if i % 3 == 0 {
                    let mut v: Vec<f32> = base.iter().map(|x| x + 0.01 * lcg(&mut seed)).collect();
                    crate::engine::l2_normalise(&mut v);
                    v
                } else {
                    unit(&mut seed, dim)
                }
            })
            .collect();
        let approx: Vec<Approx> = db
            .iter()
            .enumerate()
            .map(|(id, v)| {
                let mut c = vec![0i8; dim];
                let qa = quantise(v, &mut c);
                Approx {
                    id,
                    score: qa.scale * qq.scale * dot_i8(&c, &cq) as f32,
                    bound: qa.residual + qa.norm * qq.residual,
                }
            })
            .collect();
        for k in [1, 10, 100] {
            let cand = candidates(&approx, k);
            let mut exact: Vec<(usize, f32)> = db.iter().enumerate().map(|(i, v)| (i, dot_f32(v, &q))).collect();
            exact.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (id, _) in &exact[..k] {
                assert!(
                    cand.iter().any(|c| c.id == *id),
                    "k {k}: exact hit {id} not a candidate"
                );
            }
            assert!(cand.len() < db.len(), "the bound prunes something");
        }
    }
}
