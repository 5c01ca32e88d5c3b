//! The kernels against candle's dequantized weights, and against each other: every format on
//! every level this CPU has, at both activation precisions, on awkward shapes; and batching
//! (weights, sequences, prompt chunks) that must not change a row's result.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::dot::{dot, dot16, dot4};
use crate::kquant::QK_K;
use crate::level::detect;
use crate::{matmul_many, matmul_many_at, Acts, Format, Level, Precision, QWeight, QK};

/// Real GGUF bytes of an `n × k` matrix quantized by candle (the reference implementation of
/// the formats), plus the weights it dequantizes to.
fn quantized(dtype: GgmlDType, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let dev = Device::Cpu;
    // A small LCG: reproducible, and spread over several orders of magnitude like real weights.
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let vals: Vec<f32> = (0..n * k)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32;
            (u - 0.5) * if state & 7 == 0 { 4.0 } else { 0.5 }
        })
        .collect();
    let w = Tensor::from_vec(vals, (n, k), &dev).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let raw = q.data().unwrap().to_vec();
    let deq = q.dequantize(&dev).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (raw, deq)
}

fn reference(w: &[f32], x: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for r in 0..n {
            out[i * n + r] = (0..k).map(|j| w[r * k + j] as f64 * x[i * k + j] as f64).sum::<f64>() as f32;
        }
    }
    out
}

/// Error relative to the largest output, and to the reference's own rounding: activation
/// quantization to 8 bits bounds it near 1e-2 of the output scale; we state 2e-2.
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-6);
    got.iter().zip(want).fold(0f32, |a, (g, w)| a.max((g - w).abs())) / scale
}

#[test]
fn every_format_and_level_matches_the_reference_on_awkward_shapes() {
    let levels = [Level::Scalar, Level::Avx2, Level::Avx512Vnni];
    let host = detect();
    // k: one block, a block count that is not a multiple of 16 (or 8), and a long row;
    // n: not a multiple of the 8-row work group; m: decode (1) and a small prefill. The
    // K-quants' rows hold whole 256-value super-blocks: 8 blocks (no full 16-block step),
    // 16, 24 and 40 (full steps plus pairs).
    let small = [(3, 32), (5, 96), (13, 576), (21, 1536), (9, 32 * 37)];
    let k_quant = [(3, 256), (5, 512), (13, 768), (9, 1280)];
    for (format, dtype, shapes) in [
        (Format::Q4_0, GgmlDType::Q4_0, &small[..]),
        (Format::Q4_1, GgmlDType::Q4_1, &small[..]),
        (Format::Q5_0, GgmlDType::Q5_0, &small[..]),
        (Format::Q5_1, GgmlDType::Q5_1, &small[..]),
        (Format::Q8_0, GgmlDType::Q8_0, &small[..]),
        (Format::Q4K, GgmlDType::Q4K, &k_quant[..]),
        (Format::Q6K, GgmlDType::Q6K, &k_quant[..]),
    ] {
        for &(n, k) in shapes {
            let (raw, deq) = quantized(dtype, n, k, (n * k) as u64);
            let w = QWeight::from_gguf_bytes(format, n, k, &raw).unwrap();
            for m in [1usize, 5, 7] {
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.7).collect();
                let want = reference(&deq, &x, m, n, k);
                let acts = Acts::<i8>::quantize(&x, m, k);
                for &lvl in levels.iter().filter(|l| **l as u8 <= host as u8) {
                    let got: Vec<f32> = (0..m)
                        .flat_map(|i| (0..n).map(move |r| (i, r)))
                        .map(|(i, r)| dot(w.kind, lvl, &w.row(r), &acts.row(i)))
                        .collect();
                    let e = rel_err(&got, &want);
                    assert!(e < 2e-2, "{format:?} {lvl:?} n={n} k={k} m={m}: relative error {e}");
                }
                if m >= 4 {
                    let a = [acts.row(0), acts.row(1), acts.row(2), acts.row(3)];
                    for &lvl in levels.iter().filter(|l| **l as u8 <= host as u8) {
                        for r in 0..n {
                            let four = dot4(w.kind, lvl, &w.row(r), &a);
                            let one: Vec<f32> = (0..4).map(|i| dot(w.kind, lvl, &w.row(r), &a[i])).collect();
                            assert!(rel_err(&four, &one) < 1e-5, "dot4 {format:?} {lvl:?} n={n} k={k}");
                        }
                    }
                }
                // 16-bit activations: near the f32 result on every level, and levels agree.
                let acts16 = Acts::<i16>::quantize(&x, m, k);
                let mut scalar16 = Vec::new();
                for &lvl in levels.iter().filter(|l| **l as u8 <= host as u8) {
                    let got: Vec<f32> = (0..m)
                        .flat_map(|i| (0..n).map(move |r| (i, r)))
                        .map(|(i, r)| dot16(w.kind, lvl, &w.row(r), [&acts16.row(i)])[0])
                        .collect();
                    let e = rel_err(&got, &want);
                    assert!(e < 1e-3, "16-bit {format:?} {lvl:?} n={n} k={k} m={m}: relative error {e}");
                    if lvl == Level::Scalar {
                        scalar16 = got;
                    } else {
                        assert!(rel_err(&got, &scalar16) < 1e-5, "16-bit {format:?} {lvl:?} vs scalar");
                    }
                }
                // One activation scale per super-block (what K-quant matmuls quantize to, for
                // `x86::dot_k16_vnni`) or per row (f16-scaled formats, `x86::dot_r16_vnni`):
                // levels agree.
                let nb = k / QK;
                for group in [8, nb].into_iter().filter(|&g| g == nb || k % QK_K == 0) {
                    let grouped = Acts::<i16>::quantize_grouped(&x, m, k, group);
                    let on = |lvl: Level| -> Vec<f32> {
                        (0..m)
                            .flat_map(|i| (0..n).map(move |r| (i, r)))
                            .map(|(i, r)| dot16(w.kind, lvl, &w.row(r), [&grouped.row(i)])[0])
                            .collect()
                    };
                    let scalar = on(Level::Scalar);
                    assert!(rel_err(&scalar, &want) < 1e-3, "{group}-block 16-bit {format:?} n={n} k={k}");
                    for &lvl in levels.iter().filter(|l| **l as u8 <= host as u8) {
                        let e = rel_err(&on(lvl), &scalar);
                        assert!(e < 1e-5, "{group}-block 16-bit {format:?} {lvl:?} n={n} k={k}: {e}");
                    }
                    // The same rows quad-interleaved (what VNNI's matmuls quantize Q4_0 and Q5_0
                    // to; the kernel takes every nibble format): the scalar loop reads the same
                    // integers in the same order, the VNNI kernel sums them four blocks a
                    // register (Q8_0 falls back to the scalar loop).
                    if group == nb {
                        let quads = Acts::<i16>::quantize_quads(&x, m, k, group, true);
                        let on = |lvl: Level| -> Vec<f32> {
                            (0..m)
                                .flat_map(|i| (0..n).map(move |r| (i, r)))
                                .map(|(i, r)| dot16(w.kind, lvl, &w.row(r), [&quads.row(i)])[0])
                                .collect()
                        };
                        assert_eq!(on(Level::Scalar), scalar, "quads {format:?} n={n} k={k}");
                        for &lvl in levels.iter().filter(|l| **l as u8 <= host as u8) {
                            let e = rel_err(&on(lvl), &scalar);
                            assert!(e < 1e-5, "quads 16-bit {format:?} {lvl:?} n={n} k={k}: {e}");
                        }
                    }
                }
                // The whole matmul on each level.
                for &lvl in levels.iter().filter(|l| **l as u8 <= host as u8) {
                    let mut out16 = vec![0f32; m * n];
                    matmul_many_at(lvl, &[&w], &x, m, &mut [&mut out16], Precision::I16);
                    let e = rel_err(&out16, &want);
                    assert!(e < 1e-3, "16-bit matmul {format:?} {lvl:?} n={n} k={k} m={m}: {e}");
                }
                // Levels agree with each other far more closely than with f32 (same integers).
                let scalar: Vec<f32> = (0..n).map(|r| dot(w.kind, Level::Scalar, &w.row(r), &acts.row(0))).collect();
                let best: Vec<f32> = (0..n).map(|r| dot(w.kind, host, &w.row(r), &acts.row(0))).collect();
                assert!(rel_err(&best, &scalar) < 1e-5, "{format:?} {host:?} vs scalar n={n} k={k}");
                let mut out = vec![0f32; m * n];
                w.matmul(&x, m, &mut out);
                assert!(rel_err(&out, &want) < 2e-2, "matmul {format:?} n={n} k={k} m={m}");
                // Row expansion (the embedding lookup) gives exactly the reference weights.
                let mut row = vec![0f32; k];
                w.dequantize_row(n - 1, &mut row);
                assert_eq!(row, deq[(n - 1) * k..n * k], "{format:?} row");
            }
        }
    }
}

#[test]
fn a_batch_of_weights_gives_what_each_gives_alone() {
    let (k, m) = (96, 5);
    let ws: Vec<QWeight> =
        [(7, GgmlDType::Q4_1, Format::Q4_1), (20, GgmlDType::Q8_0, Format::Q8_0), (3, GgmlDType::Q4_0, Format::Q4_0)]
            .iter()
            .map(|&(n, dt, f)| QWeight::from_gguf_bytes(f, n, k, &quantized(dt, n, k, n as u64).0).unwrap())
            .collect();
    let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect();
    for p in [Precision::I8, Precision::I16] {
        let mut outs: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; m * w.n]).collect();
        let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        matmul_many(&ws.iter().collect::<Vec<_>>(), &x, m, &mut views, p);
        for (w, o) in ws.iter().zip(&outs) {
            let mut alone = vec![0f32; m * w.n];
            w.matmul_with(&x, m, &mut alone, p);
            assert_eq!(o, &alone, "{p:?}");
        }
    }
}

#[test]
fn a_long_prompt_split_into_activation_chunks_gives_what_each_row_gives_alone() {
    // k = 4096 at 16 bits is 8 KiB a row: 16-row chunks, so 37 rows are 16 + 16 + 5 (with
    // a tail of one after the last whole quad). The f16-scaled formats take 129 blocks a row
    // (8-row chunks): passes of eight read widened weight rows, whose odd last block is not.
    let (n, m) = (13, 37);
    for (format, dtype, k) in [
        (Format::Q4_1, GgmlDType::Q4_1, 4096),
        (Format::Q4_1, GgmlDType::Q4_1, 4128),
        (Format::Q5_0, GgmlDType::Q5_0, 4128),
        (Format::Q8_0, GgmlDType::Q8_0, 4128),
        (Format::Q6K, GgmlDType::Q6K, 4096),
        (Format::Q4K, GgmlDType::Q4K, 4096),
    ] {
        let w = QWeight::from_gguf_bytes(format, n, k, &quantized(dtype, n, k, 5).0).unwrap();
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect();
        for p in [Precision::I8, Precision::I16] {
            let mut all = vec![0f32; m * n];
            w.matmul_with(&x, m, &mut all, p);
            for i in 0..m {
                let mut one = vec![0f32; n];
                w.matmul_with(&x[i * k..(i + 1) * k], 1, &mut one, p);
                assert_eq!(all[i * n..(i + 1) * n], one, "{format:?} k={k} {p:?} row {i}");
            }
        }
    }
}

/// A decode step of a few sequences (1 to 9 rows: passes of eight, four, two and one) gives
/// each row exactly what it gets alone, so batching sequences never changes their text.
#[test]
fn a_small_batch_gives_each_row_exactly_what_it_gets_alone() {
    let (n, k) = (21, 512);
    for (format, dtype) in [
        (Format::Q4_1, GgmlDType::Q4_1),
        (Format::Q5_0, GgmlDType::Q5_0),
        (Format::Q8_0, GgmlDType::Q8_0),
        (Format::Q4K, GgmlDType::Q4K),
        (Format::Q6K, GgmlDType::Q6K),
    ] {
        let w = QWeight::from_gguf_bytes(format, n, k, &quantized(dtype, n, k, 9).0).unwrap();
        for m in 1..=9 {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 29) % 23) as f32 / 11.0 - 1.0).collect();
            let mut all = vec![0f32; m * n];
            w.matmul_with(&x, m, &mut all, Precision::I16);
            for i in 0..m {
                let mut one = vec![0f32; n];
                w.matmul_with(&x[i * k..(i + 1) * k], 1, &mut one, Precision::I16);
                assert_eq!(all[i * n..(i + 1) * n], one, "{format:?} m={m} row {i}");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_simd_quantizer_gives_the_scalar_loops_integers_and_scales() {
    // Every quantizer this CPU runs (AVX-512's and AVX2's on an AVX-512 host).
    let host = detect();
    let levels = [Level::Avx2, Level::Avx512Vnni].into_iter().filter(|&l| l as u8 <= host as u8);
    // Odd block counts (a last block in natural order), short last groups, ties (±0.5 steps
    // after scaling), zeros, a NaN and a row of zeros.
    for (lvl, (k, group)) in
        levels.flat_map(|l| [(32, 1), (96, 8), (640, 20), (640, 8), (1184, 8), (2048, 64)].map(|s| (l, s)))
    {
        let simd = Acts::<i16>::simd_row_at(lvl).expect("a SIMD quantizer at every SIMD level");
        let m = 3;
        let mut x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 2001) as f32 - 1000.0) / 37.0).collect();
        x[5] = f32::NAN;
        x[k + 3] = 1000.0 / 37.0 * 0.5;
        x[2 * k..].iter_mut().for_each(|v| *v = 0.0);
        for quads in [false, true] {
            let (a, b) = (
                Acts::<i16>::quantize_grouped_with(&x, m, k, group, quads, None),
                Acts::<i16>::quantize_grouped_with(&x, m, k, group, quads, Some(simd)),
            );
            assert_eq!(&a.q[..], &b.q[..], "{lvl:?} k={k} group={group} quads={quads}");
            assert_eq!(a.d, b.d, "{lvl:?} k={k} group={group}");
            assert_eq!(a.s, b.s, "{lvl:?} k={k} group={group}");
        }
    }
}

#[test]
fn zero_activations_and_bad_shapes() {
    let (raw, _) = quantized(GgmlDType::Q4_1, 4, 64, 1);
    let w = QWeight::from_gguf_bytes(Format::Q4_1, 4, 64, &raw).unwrap();
    let mut out = vec![1f32; 4];
    w.matmul(&[0f32; 64], 1, &mut out);
    assert_eq!(out, [0f32; 4]);
    assert!(QWeight::from_gguf_bytes(Format::Q4_1, 4, 64, &raw[1..]).is_err());
    assert!(QWeight::from_gguf_bytes(Format::Q4_1, 4, 48, &raw).is_err());
    // A K-quant row must hold whole super-blocks.
    let (raw, _) = quantized(GgmlDType::Q6K, 2, 256, 1);
    assert!(QWeight::from_gguf_bytes(Format::Q6K, 1, 512, &raw).is_ok());
    assert!(QWeight::from_gguf_bytes(Format::Q6K, 4, 128, &raw).is_err());
}

/// Both 16-bit layouts place a row's values one to a slot, and quads keep the blocks past the
/// last whole quad where pairs put them.
#[test]
fn the_16_bit_layouts_are_permutations() {
    use crate::acts::pos16;
    for nb in [1, 2, 3, 4, 5, 7, 8, 18, 20, 37] {
        for quads in [false, true] {
            let mut seen = vec![false; nb * QK];
            for b in 0..nb {
                for j in 0..QK {
                    let p = pos16(nb, b, j, quads);
                    assert!(!std::mem::replace(&mut seen[p], true), "nb={nb} quads={quads}: {b}.{j} at {p} twice");
                    if b >= nb / 4 * 4 {
                        assert_eq!(p, pos16(nb, b, j, false), "nb={nb}: the tail block {b}");
                    }
                }
            }
            assert!(seen.iter().all(|&s| s), "nb={nb} quads={quads}");
        }
    }
}
