//! The quantized kernels on arbitrary block bytes and activations, shapes included: every
//! instruction-set path agrees with the scalar one (under AddressSanitizer a read past a row or a
//! block shows here), at both activation precisions.
#![no_main]

use cortex_kernels::{effective_precision, matmul_many_at, Format, Level, Precision, QWeight};
use libfuzzer_sys::fuzz_target;

/// Each format with its block's values and bytes, and where its f16 scales' high bytes lie.
const FORMATS: [(Format, usize, usize, &[usize]); 7] = [
    (Format::Q4_0, 32, 18, &[1]),
    (Format::Q4_1, 32, 20, &[1, 3]),
    (Format::Q5_0, 32, 22, &[1]),
    (Format::Q5_1, 32, 24, &[1, 3]),
    (Format::Q8_0, 32, 34, &[1]),
    (Format::Q4K, 256, 144, &[1, 3]),
    (Format::Q6K, 256, 210, &[209]),
];

fuzz_target!(|data: &[u8]| {
    let [f, n, nb, m, rest @ ..] = data else { return };
    let (format, values, block, scales) = FORMATS[*f as usize % FORMATS.len()];
    let (n, nb, m) = (1 + *n as usize % 9, 1 + *nb as usize % (1280 / values), 1 + *m as usize % 6);
    let k = nb * values;
    if rest.is_empty() {
        return;
    }
    let mut raw: Vec<u8> = rest.iter().copied().cycle().take(n * nb * block).collect();
    // Keep the f16 scale (and min) finite and small: arbitrary exponents make inf − inf = NaN,
    // which no two summation orders agree on.
    for b in raw.chunks_exact_mut(block) {
        for &at in scales {
            b[at] &= 0x83;
        }
    }
    let w = QWeight::from_gguf_bytes(format, n, k, &raw).expect("sizes match");
    let x: Vec<f32> = rest.iter().rev().copied().cycle().take(m * k).map(|b| (b as i8) as f32 / 16.0).collect();
    // Rounding errors scale with the terms summed, not with the result (they may cancel to 0,
    // and so may a weight's scale and min terms): the bound is relative to
    // max Σ (|d·q| + |m|)·|x| over the outputs.
    let mut row = vec![0f32; k];
    let mut scale = 1e-30f32;
    for r in 0..n {
        w.magnitude_row(r, &mut row);
        for i in 0..m {
            let mag: f32 = row.iter().zip(&x[i * k..(i + 1) * k]).map(|(a, b)| (a * b).abs()).sum();
            scale = scale.max(mag);
        }
    }
    for p in [Precision::I8, Precision::I16] {
        for lvl in [Level::Avx2, Level::Avx512Vnni] {
            // Against the scalar path at the precision this level computes at.
            let mut want = vec![0f32; m * n];
            matmul_many_at(Level::Scalar, &[&w], &x, m, &mut [&mut want], effective_precision(lvl, &[&w], p));
            let mut got = vec![0f32; m * n];
            matmul_many_at(lvl, &[&w], &x, m, &mut [&mut got], p);
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() <= 1e-4 * scale, "{format:?} {lvl:?} {p:?}: {g} vs {e}");
            }
        }
    }
});
