//! The element-wise and row-wise stages of a CPU step on plain f32 slices: RMS norms, the MLP's
//! gate, softmax, the residual add, and the `exp` they share; rows of a prompt run on candle's
//! worker pool, a decode step's in place.

use crate::engine::spec::Gate;

/// `g[i] = gate(g[i]) · u[i]`. GELU as 0.5·g·(1 + tanh(v)) = g·σ(2v): one `exp` like SiLU
/// (libm's `tanhf`, through `expm1f`, cost a quarter of Gemma's prefill), and that [`exp`]
/// rather than libm's so that the loop vectorizes (libm's `expf`, a call a value, was 2.5 %).
pub(super) fn gate_times(gate: Gate, g: &mut [f32], u: &[f32]) {
    match gate {
        Gate::Silu => g.iter_mut().zip(u).for_each(|(g, u)| *g = *g / (1.0 + exp(-*g)) * u),
        Gate::GeluTanh => g
            .iter_mut()
            .zip(u)
            .for_each(|(g, u)| *g = *g / (1.0 + exp(-2.0 * SQRT_2_OVER_PI * (*g + 0.044_715 * *g * *g * *g))) * u),
    }
}

/// √(2/π), for the tanh approximation of GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// eˣ within 2 ulp over f32's normal range (0 below about −87.5, ∞ above 88.7), in arithmetic
/// the compiler vectorizes: eʳ·2ⁿ with n = round(x·log₂e), r = x − n·ln 2 in two parts (Cody and
/// Waite, so that r keeps its low bits), eʳ by its Taylor series to r⁷ on |r| ≤ ½ ln 2, and 2ⁿ
/// built in the exponent bits.
#[inline]
pub(super) fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4; // ln 2 with its low 12 bits clear: n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-88.0, 89.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2ⁿ; n = −127 gives 0 (the result would be subnormal), n = 128 gives ∞.
    p * f32::from_bits(((n as i32 + 127).max(0) as u32) << 23)
}

/// In place. The maximum and the sum are taken in eight lanes and the exponentials in a loop of
/// their own: one running value carried from element to element kept each loop scalar, and
/// attention's softmax was a sixth of a 2.5k-token prefill.
pub(super) fn softmax(xs: &mut [f32]) {
    let max = lanes(xs, f32::NEG_INFINITY, f32::max).into_iter().fold(f32::NEG_INFINITY, f32::max);
    xs.iter_mut().for_each(|x| *x = exp(*x - max));
    let inv = 1.0 / lanes(xs, 0.0, |a, b| a + b).into_iter().sum::<f32>();
    xs.iter_mut().for_each(|x| *x *= inv);
}

/// `xs` folded by `f` into eight lanes (element i into lane i mod 8), each starting at `init`.
#[inline]
fn lanes(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> [f32; 8] {
    let mut acc = [init; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        (0..8).for_each(|i| acc[i] = f(acc[i], c[i]));
    }
    chunks.remainder().iter().enumerate().for_each(|(i, &x)| acc[i] = f(acc[i], x));
    acc
}

/// Row-wise `x / sqrt(mean(x²) + eps) · w` over rows of `w.len()`, as candle's `rms_norm`; a
/// prompt's rows on the worker pool.
pub(super) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    let op = out.as_mut_ptr() as usize;
    each_row(x.len() / d, |r| {
        let xr = &x[r * d..(r + 1) * d];
        let inv = 1.0 / (sum_squares(xr) / d as f32 + eps).sqrt();
        // SAFETY: row r alone writes this row of `out`, which outlives the call.
        let or = unsafe { rows_mut(op, r, d) };
        for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    });
}

/// [`rms_norm`] in place.
pub(super) fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    let xp = x.as_mut_ptr() as usize;
    each_row(x.len() / d, |r| {
        // SAFETY: row r alone touches this row of `x`, which outlives the call.
        let xr = unsafe { rows_mut(xp, r, d) };
        let inv = 1.0 / (sum_squares(xr) / d as f32 + eps).sqrt();
        xr.iter_mut().zip(w).for_each(|(v, g)| *v *= inv * g);
    });
}

/// Σx² in eight running sums, which the compiler keeps in a vector register: one running sum is
/// a chain of dependent adds as long as the row (these norms were 3 % of Gemma 3's prefill, with
/// the other thread waiting).
fn sum_squares(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        (0..8).for_each(|i| acc[i] += c[i] * c[i]);
    }
    acc.iter().sum::<f32>() + tail
}

/// Runs `f` for rows `0..t`: on the worker pool for a prompt, where the other thread would
/// otherwise wait through this layer's serial work (GELU's exponentials, RoPE); in place for a
/// decode step, where a hand-off costs more than the row.
pub(super) fn each_row(t: usize, f: impl Fn(usize) + Sync) {
    if t >= 16 {
        candle_core::utils::barrier_pool().execute_chunked(t, |rows| rows.for_each(&f));
    } else {
        (0..t).for_each(f);
    }
}

/// Row `r` of `width` floats in the buffer at `base`.
///
/// # Safety
/// The buffer must hold row `r`, outlive the slice, and no other reference may touch the row.
pub(super) unsafe fn rows_mut<'a>(base: usize, r: usize, width: usize) -> &'a mut [f32] {
    std::slice::from_raw_parts_mut((base as *mut f32).add(r * width), width)
}

/// `x += y` over rows of `width`, a prompt's rows on the worker pool.
pub(super) fn add(x: &mut [f32], y: &[f32], width: usize) {
    let xp = x.as_mut_ptr() as usize;
    each_row(x.len() / width, |r| {
        // SAFETY: row r alone touches this row of `x`, which outlives the call.
        let xr = unsafe { rows_mut(xp, r, width) };
        xr.iter_mut().zip(&y[r * width..(r + 1) * width]).for_each(|(a, b)| *a += b);
    });
}

pub(super) fn resize(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::tests::{close, data};
    use candle_core::{Device, Tensor};

    fn gate(g: Gate, x: f32) -> f32 {
        let mut v = [x];
        gate_times(g, &mut v, &[1.0]);
        v[0]
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_the_range() {
        let ulp = |x: f32| f32::from_bits(x.to_bits() + 1) - x;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0 + 0.000_37;
            let (got, want) = (exp(x), (x as f64).exp());
            assert!((got as f64 - want).abs() <= 2.0 * ulp(want as f32) as f64, "exp({x}) = {got}, want {want}");
        }
        assert_eq!((exp(-100.0), exp(100.0)), (0.0, f32::INFINITY));
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(gate(Gate::Silu, -100.0), 0.0);
        assert!((gate(Gate::Silu, 2.0) - 2.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn gelu_is_the_tanh_approximation() {
        // Values of 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
        for (x, want) in [(0.0f32, 0.0f32), (1.0, 0.841_192), (-1.0, -0.158_808), (3.0, 2.996_363)] {
            let got = gate(Gate::GeluTanh, x);
            assert!((got - want).abs() < 1e-5, "gelu({x}) = {got}");
        }
        // The σ form against the tanh form itself, over the range activations take (and far out,
        // where exp overflows to ∞ and the result must still be 0·x, not NaN).
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            let tanh_form = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh());
            let got = gate(Gate::GeluTanh, x);
            assert!((got - tanh_form).abs() <= 1e-6 * (1.0 + x.abs()), "gelu({x}) = {got}, tanh form {tanh_form}");
        }
        assert_eq!(gate(Gate::GeluTanh, -200.0), 0.0);
    }

    /// The norms compute what candle's `rms_norm` computes (the models the decoder replaces use it).
    #[test]
    fn norms_match_candles() {
        let dev = Device::Cpu;
        let (hidden, t) = (64, 3);
        let x = data(t * hidden, 1);
        let w = data(hidden, 2);
        let mut ours = vec![0f32; t * hidden];
        rms_norm(&x, &w, 1e-5, &mut ours);
        let xt = Tensor::from_slice(&x, (t, hidden), &dev).unwrap();
        let theirs = candle_nn::ops::rms_norm(&xt, &Tensor::from_slice(&w, hidden, &dev).unwrap(), 1e-5).unwrap();
        assert!(close(&ours, &theirs.flatten_all().unwrap().to_vec1().unwrap()) < 1e-5);
        let mut inplace = x.clone();
        rms_norm_in_place(&mut inplace, &w, 1e-5);
        assert!(close(&inplace, &ours) < 1e-6);
        // A prompt's worth of rows (on the worker pool), a width that is not a multiple of 8.
        let (rows, width) = (37, 75);
        let (x, w) = (data(rows * width, 7), data(width, 8));
        let mut ours = vec![0f32; rows * width];
        rms_norm(&x, &w, 1e-6, &mut ours);
        let xt = Tensor::from_slice(&x, (rows, width), &dev).unwrap();
        let theirs = candle_nn::ops::rms_norm(&xt, &Tensor::from_slice(&w, width, &dev).unwrap(), 1e-6).unwrap();
        assert!(close(&ours, &theirs.flatten_all().unwrap().to_vec1().unwrap()) < 1e-5);
        let mut sum = x.clone();
        add(&mut sum, &ours, width);
        assert!(sum.iter().zip(x.iter().zip(&ours)).all(|(s, (a, b))| *s == a + b));
    }
}
