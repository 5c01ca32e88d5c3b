//! Which instruction set the kernels run on ([`Level`]): the best this CPU offers, decided once a
//! process so that every matmul in it takes the same path, and capped where asked, by the daemon's
//! configuration ([`set_level_cap`]) or by `CORTEX_KERNELS` (an override, for comparisons). This
//! module is the one place the crate reads its environment.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// Which instruction set the kernels use on this host, ordered from least to most capable
/// (levels are compared with `as u8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Scalar,
    Avx2,
    Avx512Vnni,
}

/// The environment variable that caps the level: a level's name ([`Level::as_str`]). Set, it
/// overrides the cap given to [`set_level_cap`]; unset, empty or no level's name, it caps nothing.
const ENV: &str = "CORTEX_KERNELS";

impl Level {
    /// Every level, least capable first.
    const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512Vnni];

    /// The level's name as configuration and `CORTEX_KERNELS` spell it: `scalar`, `avx2` or
    /// `avx512vnni` ([`Level::from_str`] takes these back).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512Vnni => "avx512vnni",
        }
    }

    /// `self`, or `cap` where `cap` is the less capable.
    fn capped_at(self, cap: Level) -> Level {
        if cap as u8 <= self as u8 {
            cap
        } else {
            self
        }
    }
}

impl FromStr for Level {
    type Err = UnknownLevel;

    /// A level from its name ([`Level::as_str`]), exactly as spelled there.
    fn from_str(s: &str) -> Result<Self, UnknownLevel> {
        Level::ALL.into_iter().find(|l| l.as_str() == s).ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

/// A name that is no level's ([`Level::from_str`]); it holds the name given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLevel(pub String);

impl fmt::Display for UnknownLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown kernel level {:?} (expected ", self.0)?;
        for (i, l) in Level::ALL.iter().enumerate() {
            let sep = match i {
                0 => "",
                _ if i + 1 == Level::ALL.len() => " or ",
                _ => ", ",
            };
            write!(f, "{sep}{}", l.as_str())?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownLevel {}

/// [`set_level_cap`] came after the level was decided (by a matmul, [`level`] or an earlier cap)
/// and changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelDecided {
    /// The level in force, which stays.
    pub level: Level,
}

impl fmt::Display for LevelDecided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the kernel level was already decided ({}): a cap must come before the first matmul",
            self.level.as_str()
        )
    }
}

impl std::error::Error for LevelDecided {}

/// The process's level, once decided.
static LEVEL: OnceLock<Level> = OnceLock::new();

/// The level every matmul of this process runs at: the best this CPU offers, capped by
/// `CORTEX_KERNELS` where it names a level, else by the cap given to [`set_level_cap`], if any.
/// Decided on first use (this or the first matmul) and fixed from then on.
pub fn level() -> Level {
    *LEVEL.get_or_init(|| decide(detect(), env_cap(), None))
}

/// Caps the level at `cap` (the daemon's configuration): the best this CPU offers where `cap` is
/// beyond it, and `CORTEX_KERNELS`, where it names a level, in `cap`'s place (the environment
/// overrides). Call it once at start-up, before any matmul: it returns the level decided, or,
/// where the level was already decided (by a matmul, [`level`] or an earlier call),
/// [`LevelDecided`] with the level in force, which it leaves as it was, so that one process never
/// mixes levels.
pub fn set_level_cap(cap: Level) -> Result<Level, LevelDecided> {
    decide_once(&LEVEL, || decide(detect(), env_cap(), Some(cap)))
}

/// `cell`'s level, set by `decide` where `cell` held none, else [`LevelDecided`].
fn decide_once(cell: &OnceLock<Level>, decide: impl FnOnce() -> Level) -> Result<Level, LevelDecided> {
    let mut fresh = false;
    let level = *cell.get_or_init(|| {
        fresh = true;
        decide()
    });
    if fresh {
        Ok(level)
    } else {
        Err(LevelDecided { level })
    }
}

/// `best` capped by the environment's cap where there is one, else by the configuration's.
fn decide(best: Level, env: Option<Level>, config: Option<Level>) -> Level {
    env.or(config).map_or(best, |cap| best.capped_at(cap))
}

/// The cap `CORTEX_KERNELS` names, if it names one.
fn env_cap() -> Option<Level> {
    std::env::var(ENV).ok()?.parse().ok()
}

/// The best level this CPU offers.
pub(crate) fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let f16c = is_x86_feature_detected!("f16c");
        let vnni = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        if avx2 && f16c && vnni {
            return Level::Avx512Vnni;
        }
        if avx2 && f16c {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// AMX on this host, for what `cortex devices` reports: the kernels have no AMX path yet (prefill
/// runs at [`level`]), and a path would need Linux's permission first, which this asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amx {
    /// The CPU has no AMX tiles (or this is not x86-64 Linux).
    Absent,
    /// The CPU has AMX-TILE and AMX-INT8, and Linux granted this process their state
    /// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`).
    Granted,
    /// The CPU has them but the kernel refused the permission (too old a kernel, or a VM that
    /// hides the state).
    Refused,
}

impl Amx {
    pub fn as_str(self) -> &'static str {
        match self {
            Amx::Absent => "absent",
            Amx::Granted => "granted",
            Amx::Refused => "refused",
        }
    }
}

/// Whether this CPU has AMX and the OS lets this process use it; asks for the permission once.
pub fn amx() -> Amx {
    static AMX: OnceLock<Amx> = OnceLock::new();
    *AMX.get_or_init(detect_amx)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect_amx() -> Amx {
    use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    // Leaf 7 only where the CPU offers it.
    let edx = if __get_cpuid_max(0).0 >= 7 { __cpuid_count(7, 0).edx } else { 0 };
    let (tile, int8) = (edx & (1 << 24) != 0, edx & (1 << 25) != 0);
    if !(tile && int8) {
        return Amx::Absent;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes this process's permitted XSAVE
    // state; it reads and writes no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
    if rc == 0 {
        Amx::Granted
    } else {
        Amx::Refused
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect_amx() -> Amx {
    Amx::Absent
}

/// `lvl`, or this CPU's best level where `lvl` is beyond it.
pub(crate) fn capped(lvl: Level) -> Level {
    lvl.capped_at(level())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_from_their_names_and_nothing_else() {
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>(), Ok(l));
        }
        assert_eq!("avx512vnni".parse(), Ok(Level::Avx512Vnni));
        for bad in ["", "AVX2", "avx512", " scalar", "neon"] {
            let e = bad.parse::<Level>().unwrap_err();
            assert_eq!(e, UnknownLevel(bad.to_owned()));
            assert_eq!(e.to_string(), format!("unknown kernel level {bad:?} (expected scalar, avx2 or avx512vnni)"));
        }
    }

    #[test]
    fn the_environment_overrides_the_configuration_and_neither_raises_the_cpu() {
        use Level::*;
        assert_eq!(decide(Avx512Vnni, None, None), Avx512Vnni);
        assert_eq!(decide(Avx512Vnni, None, Some(Avx2)), Avx2);
        assert_eq!(decide(Avx512Vnni, Some(Scalar), Some(Avx2)), Scalar);
        // The environment's cap replaces the configuration's, also where it is the higher.
        assert_eq!(decide(Avx512Vnni, Some(Avx512Vnni), Some(Scalar)), Avx512Vnni);
        assert_eq!(decide(Avx2, None, Some(Avx512Vnni)), Avx2);
        assert_eq!(decide(Avx2, Some(Avx512Vnni), None), Avx2);
        assert_eq!(decide(Scalar, Some(Avx2), Some(Avx2)), Scalar);
    }

    #[test]
    fn a_cap_after_the_level_is_decided_changes_nothing() {
        let cell = OnceLock::new();
        assert_eq!(decide_once(&cell, || Level::Avx2), Ok(Level::Avx2));
        assert_eq!(decide_once(&cell, || Level::Scalar), Err(LevelDecided { level: Level::Avx2 }));
        assert_eq!(cell.get(), Some(&Level::Avx2));
        // The process's own level, once used, stays as it is.
        let now = level();
        assert_eq!(set_level_cap(Level::Scalar), Err(LevelDecided { level: now }));
        assert_eq!(level(), now);
    }
}
