//! The scalar dot products: the reference the SIMD kernels are tested against, and what a CPU
//! without AVX2 runs.

use crate::acts::{pos16, ActRow};
use crate::weight::{Kind, Row};
use crate::QK;

pub(crate) fn dot16_scalar(kind: Kind, w: &Row, a: &ActRow<i16>) -> f32 {
    let nb = a.d.len();
    let mut acc = 0f32;
    for b in 0..nb {
        let x = |j: usize| a.q[pos16(nb, b, j, a.quads)] as i32;
        match kind {
            Kind::Q4 => {
                let hb = w.qh.get(b).copied().unwrap_or(0);
                let q = |j: usize, v: u8| v as i32 | (((hb >> j) & 1) << 4) as i32;
                let sum: i32 = (0..16)
                    .map(|j| q(j, w.qs[b * 16 + j] & 15) * x(j) + q(j + 16, w.qs[b * 16 + j] >> 4) * x(j + 16))
                    .sum();
                acc += w.d.get(b) * a.d[b] * sum as f32 + w.m.get(b) * a.s[b];
            }
            Kind::Q8 => {
                let half = |h: usize| (16 * h..16 * h + 16).map(|j| w.qs[b * QK + j] as i8 as i32 * x(j)).sum::<i32>();
                acc += a.d[b]
                    * if w.split {
                        w.d.get(2 * b) * half(0) as f32 + w.d.get(2 * b + 1) * half(1) as f32
                    } else {
                        w.d.get(b) * (half(0) + half(1)) as f32
                    };
            }
        }
    }
    acc
}

pub(crate) fn dot_scalar(kind: Kind, w: &Row, a: &ActRow<i8>) -> f32 {
    let mut acc = 0f32;
    for b in 0..a.d.len() {
        let x = &a.q[b * QK..b * QK + QK];
        match kind {
            Kind::Q4 => {
                let q = &w.qs[b * 16..b * 16 + 16];
                let hb = w.qh.get(b).copied().unwrap_or(0);
                let v = |j: usize, n: u8| n as i32 | (((hb >> j) & 1) << 4) as i32;
                let sum: i32 =
                    (0..16).map(|j| v(j, q[j] & 15) * x[j] as i32 + v(j + 16, q[j] >> 4) * x[j + 16] as i32).sum();
                acc += w.d.get(b) * a.d[b] * sum as f32 + w.m.get(b) * a.s[b];
            }
            Kind::Q8 => {
                let half =
                    |h: usize| (16 * h..16 * h + 16).map(|j| w.qs[b * QK + j] as i8 as i32 * x[j] as i32).sum::<i32>();
                acc += a.d[b]
                    * if w.split {
                        w.d.get(2 * b) * half(0) as f32 + w.d.get(2 * b + 1) * half(1) as f32
                    } else {
                        w.d.get(b) * (half(0) + half(1)) as f32
                    };
            }
        }
    }
    acc
}
