//! The quantized kernels on arbitrary block bytes and activations, shapes included: every
//! instruction-set path agrees with the scalar one (under AddressSanitizer a read past a row or a
//! block shows here), at both activation precisions.
#![no_main]

use cortex_kernels::{matmul_many_at, Format, Level, Precision, QWeight};
use libfuzzer_sys::fuzz_target;

const FORMATS: [(Format, usize); 5] =
    [(Format::Q4_0, 18), (Format::Q4_1, 20), (Format::Q5_0, 22), (Format::Q5_1, 24), (Format::Q8_0, 34)];

fuzz_target!(|data: &[u8]| {
    let [f, n, nb, m, rest @ ..] = data else { return };
    let (format, block) = FORMATS[*f as usize % FORMATS.len()];
    let (n, nb, m) = (1 + *n as usize % 9, 1 + *nb as usize % 40, 1 + *m as usize % 6);
    let k = nb * 32;
    if rest.is_empty() {
        return;
    }
    let mut raw: Vec<u8> = rest.iter().copied().cycle().take(n * nb * block).collect();
    // Keep the f16 scale (and min) finite and small: arbitrary exponents make inf − inf = NaN,
    // which no two summation orders agree on.
    let halves = if matches!(format, Format::Q4_1 | Format::Q5_1) { 2 } else { 1 };
    for b in raw.chunks_exact_mut(block) {
        for h in 0..halves {
            b[2 * h + 1] &= 0x83;
        }
    }
    let w = QWeight::from_gguf_bytes(format, n, k, &raw).expect("sizes match");
    let x: Vec<f32> = rest.iter().rev().copied().cycle().take(m * k).map(|b| (b as i8) as f32 / 16.0).collect();
    // Rounding errors scale with the terms summed, not with the result (they may cancel to 0):
    // the bound is relative to max Σ|w|·|x| over the outputs.
    let mut row = vec![0f32; k];
    let mut scale = 1e-30f32;
    for r in 0..n {
        w.dequantize_row(r, &mut row);
        for i in 0..m {
            let mag: f32 = row.iter().zip(&x[i * k..(i + 1) * k]).map(|(a, b)| (a * b).abs()).sum();
            scale = scale.max(mag);
        }
    }
    for p in [Precision::I8, Precision::I16] {
        let mut want = vec![0f32; m * n];
        matmul_many_at(Level::Scalar, &[&w], &x, m, &mut [&mut want], p);
        for lvl in [Level::Avx2, Level::Avx512Vnni] {
            let mut got = vec![0f32; m * n];
            matmul_many_at(lvl, &[&w], &x, m, &mut [&mut got], p);
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() <= 1e-4 * scale, "{format:?} {lvl:?} {p:?}: {g} vs {e}");
            }
        }
    }
});
