//! Which instruction set the kernels run on ([`Level`]): the best this CPU offers, decided once a
//! process so that every matmul in it takes the same path (`CORTEX_KERNELS=scalar|avx2` caps it).

/// Which instruction set the kernels use on this host, ordered from least to most capable
/// (levels are compared with `as u8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Scalar,
    Avx2,
    Avx512Vnni,
}

/// The best level this CPU offers (`CORTEX_KERNELS=scalar|avx2` caps it, for comparisons).
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var("CORTEX_KERNELS").unwrap_or_default();
        detect(&cap)
    })
}

pub(crate) fn detect(cap: &str) -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if cap == "scalar" {
            return Level::Scalar;
        }
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let f16c = is_x86_feature_detected!("f16c");
        let vnni = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        if cap != "avx2" && avx2 && f16c && vnni {
            return Level::Avx512Vnni;
        }
        if avx2 && f16c {
            return Level::Avx2;
        }
    }
    let _ = cap;
    Level::Scalar
}

/// `lvl`, or this CPU's best level where `lvl` is beyond it.
pub(crate) fn capped(lvl: Level) -> Level {
    if lvl as u8 <= level() as u8 {
        lvl
    } else {
        level()
    }
}
