//! The one place that decides the instruction set.
//!
//! Kernels are written once, generic over [`pulp::Simd`], and run through [`Level::dispatch`],
//! which compiles them for each level behind `#[target_feature]` and picks one at run time. A
//! [`Level`] holds pulp's proof token that its instructions exist on this CPU, so a level that is
//! not available cannot be constructed and dispatch never fails.
//!
//! `KERAS_ATTN_SIMD=scalar|avx2|avx512|neon` forces a level (read once per process); asking for a
//! level this CPU lacks, or an unknown name, prints a warning and keeps the best available one.

use pulp::{Simd, WithSimd};
use std::sync::OnceLock;

/// The environment variable that forces an instruction-set level.
pub const ENV_VAR: &str = "KERAS_ATTN_SIMD";

/// An instruction-set level available on this CPU.
#[derive(Clone, Copy, Debug)]
pub struct Level(Token);

#[derive(Clone, Copy, Debug)]
enum Token {
    Scalar,
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Avx2(pulp::x86::V3),
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Avx512(pulp::x86::V4),
    #[cfg(target_arch = "aarch64")]
    Neon(pulp::aarch64::Neon),
}

/// Every level name, lowest first (what `KERAS_ATTN_SIMD` accepts).
pub const LEVEL_NAMES: [&str; 4] = ["scalar", "neon", "avx2", "avx512"];

impl Level {
    /// The portable scalar path (always available).
    pub const SCALAR: Level = Level(Token::Scalar);

    /// The level's name: "scalar", "avx2", "avx512" or "neon".
    pub fn name(self) -> &'static str {
        match self.0 {
            Token::Scalar => "scalar",
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Token::Avx2(_) => "avx2",
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Token::Avx512(_) => "avx512",
            #[cfg(target_arch = "aarch64")]
            Token::Neon(_) => "neon",
        }
    }

    /// Every level this CPU supports, lowest first (scalar is always first).
    pub fn available() -> Vec<Level> {
        let mut levels = vec![Level::SCALAR];
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            levels.extend(pulp::x86::V3::try_new().map(|t| Level(Token::Avx2(t))));
            levels.extend(pulp::x86::V4::try_new().map(|t| Level(Token::Avx512(t))));
        }
        #[cfg(target_arch = "aarch64")]
        levels.extend(pulp::aarch64::Neon::try_new().map(|t| Level(Token::Neon(t))));
        levels
    }

    /// The best level this CPU supports.
    pub fn best() -> Level {
        *Level::available().last().expect("scalar is always available")
    }

    /// The level named `name`, if this CPU supports it.
    pub fn from_name(name: &str) -> Result<Level, String> {
        let wanted = name.trim().to_ascii_lowercase();
        if !LEVEL_NAMES.contains(&wanted.as_str()) {
            return Err(format!(
                "unknown SIMD level {name:?}; expected one of {}",
                LEVEL_NAMES.join(", ")
            ));
        }
        let available = Level::available();
        available.iter().copied().find(|l| l.name() == wanted).ok_or_else(|| {
            let names: Vec<&str> = available.iter().map(|l| l.name()).collect();
            format!("SIMD level {wanted:?} is not available on this CPU (available: {})", names.join(", "))
        })
    }

    /// The level kernels use by default: `KERAS_ATTN_SIMD` if set and available, else the best.
    pub fn active() -> Level {
        static ACTIVE: OnceLock<Level> = OnceLock::new();
        *ACTIVE.get_or_init(|| match std::env::var(ENV_VAR) {
            Ok(name) if !name.trim().is_empty() => Level::from_name(&name).unwrap_or_else(|err| {
                let best = Level::best();
                eprintln!("keras_attn: {ENV_VAR}: {err}; using {}", best.name());
                best
            }),
            _ => Level::best(),
        })
    }

    /// Runs `op` compiled for this level.
    #[inline]
    pub fn dispatch<Op: WithSimd>(self, op: Op) -> Op::Output {
        match self.0 {
            Token::Scalar => Simd::vectorize(pulp::Scalar::new(), op),
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Token::Avx2(simd) => Simd::vectorize(simd, op),
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Token::Avx512(simd) => Simd::vectorize(simd, op),
            #[cfg(target_arch = "aarch64")]
            Token::Neon(simd) => Simd::vectorize(simd, op),
        }
    }
}

/// Asks the CPU to start loading the cache line that holds `value` (a hint: no effect where the
/// instruction set has none).
#[inline(always)]
pub fn prefetch(value: &f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally visible and never faults; `value` is a
    // valid reference anyway. SSE, which provides it, is part of every x86_64 CPU.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const f32).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// `exp(x)` for every lane, within 2 ulp over the range where the result is a normal float
/// (Cephes' polynomial on `x - n ln 2`, scaled by `2^n` through the exponent bits). Inputs are
/// clamped to [-86, 88.7], so the result never overflows to infinity or falls to a subnormal.
#[inline(always)]
pub fn exp<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = simd.min_f32s(simd.max_f32s(x, simd.splat_f32s(-86.0)), simd.splat_f32s(88.7));
    let shifted = simd.mul_add_f32s(x, simd.splat_f32s(std::f32::consts::LOG2_E), simd.splat_f32s(ROUND));
    let n = simd.sub_f32s(shifted, simd.splat_f32s(ROUND));
    let r = simd.mul_add_f32s(simd.neg_f32s(n), simd.splat_f32s(0.693_359_4), x);
    let r = simd.mul_add_f32s(simd.neg_f32s(n), simd.splat_f32s(-2.121_944_4e-4), r);
    let mut p = simd.splat_f32s(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = simd.mul_add_f32s(p, r, simd.splat_f32s(c));
    }
    let p = simd.add_f32s(simd.mul_add_f32s(p, simd.mul_f32s(r, r), r), simd.splat_f32s(1.0));
    // 2^n: n's integer bits (relative to ROUND's) shifted into the exponent field.
    let n_bits = simd.sub_u32s(simd.transmute_u32s_f32s(shifted), simd.splat_u32s(ROUND.to_bits()));
    let scale = simd.mul_u32s(n_bits, simd.splat_u32s(1 << 23));
    simd.transmute_f32s_u32s(simd.add_u32s(simd.transmute_u32s_f32s(p), scale))
}

/// `max(v, 0)` with NaN kept, as Keras' ReLU (`f32::max` would turn NaN into 0).
#[inline(always)]
pub fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// [`relu`] on every lane (a vector `max` may return either operand for NaN).
#[inline(always)]
pub fn relu_f32s<S: Simd>(simd: S, v: S::f32s) -> S::f32s {
    let zero = simd.splat_f32s(0.0);
    simd.select_f32s(simd.less_than_f32s(v, zero), zero, v)
}

/// Where the sigmoid falls below the smallest normal float32 (`1 / (1 + e^87.34)`).
const SIGMOID_ZERO_BELOW: f32 = -87.33;

/// The logistic sigmoid `1 / (1 + exp(-x))` for every lane; NaN stays NaN, and values too
/// small for a normal float32 are 0.
#[inline(always)]
pub fn sigmoid<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let one = simd.splat_f32s(1.0);
    let y = simd.div_f32s(one, simd.add_f32s(one, exp(simd, simd.neg_f32s(x))));
    // Below -87.33 the sigmoid is subnormal, and TensorFlow (flushing subnormals) gives 0: so
    // must we, or a huge value times the gate stays finite (and -inf gives inf, not NaN).
    let y = simd.select_f32s(simd.less_than_f32s(x, simd.splat_f32s(SIGMOID_ZERO_BELOW)), simd.splat_f32s(0.0), y);
    // Clamping inside `exp` would turn NaN into a number on some levels.
    simd.select_f32s(simd.equal_f32s(x, x), y, x)
}

/// Applies [`sigmoid`] to every element of `values` in place.
pub fn sigmoid_in_place(level: Level, values: &mut [f32]) {
    level.dispatch(MapInPlace { values, negated_exp: false });
}

/// Replaces every element `v` of `values` by `exp(-v)`.
pub fn neg_exp_in_place(level: Level, values: &mut [f32]) {
    level.dispatch(MapInPlace { values, negated_exp: true });
}

struct MapInPlace<'a> {
    values: &'a mut [f32],
    negated_exp: bool,
}

impl WithSimd for MapInPlace<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (head, tail) = S::as_mut_simd_f32s(self.values);
        for v in head {
            *v = map_lane(simd, self.negated_exp, *v);
        }
        let last = map_lane(simd, self.negated_exp, simd.partial_load_f32s(tail));
        simd.partial_store_f32s(tail, last);
    }
}

/// A function, not a closure: a closure does not inherit the SIMD target features of the
/// function it is defined in, so the intrinsics in it would be called out of line.
#[inline(always)]
fn map_lane<S: Simd>(simd: S, negated_exp: bool, v: S::f32s) -> S::f32s {
    if negated_exp {
        exp(simd, simd.neg_f32s(v))
    } else {
        sigmoid(simd, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_keeps_nan_and_infinities() {
        assert!(relu(f32::NAN).is_nan());
        assert_eq!([relu(-2.0), relu(3.0), relu(f32::INFINITY), relu(f32::NEG_INFINITY)], [0.0, 3.0, f32::INFINITY, 0.0]);
    }

    #[test]
    fn scalar_is_always_available_and_first() {
        let levels = Level::available();
        assert_eq!(levels[0].name(), "scalar");
        assert_eq!(Level::from_name("SCALAR").unwrap().name(), "scalar");
    }

    #[test]
    fn unknown_or_unavailable_levels_are_errors() {
        assert!(Level::from_name("sse9").unwrap_err().contains("unknown SIMD level"));
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        assert!(Level::from_name("neon").unwrap_err().contains("not available"));
    }

    #[test]
    fn sigmoid_matches_f64_on_every_level() {
        let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.05).chain([f32::NAN, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY]).collect();
        for level in Level::available() {
            let mut ys = xs.clone();
            sigmoid_in_place(level, &mut ys);
            for (&x, &y) in xs.iter().zip(&ys) {
                if x.is_nan() {
                    assert!(y.is_nan(), "{}: sigmoid(NaN) = {y}", level.name());
                    continue;
                }
                let want = 1.0 / (1.0 + (-(x as f64)).exp());
                assert!((y as f64 - want).abs() <= 3e-7 * want + 1e-30,
                    "{}: sigmoid({x}) = {y}, want {want}", level.name());
                // Subnormal results are flushed to 0, as TensorFlow does.
                assert!(x >= -87.33 || y == 0.0, "{}: sigmoid({x}) = {y}, want 0", level.name());
            }
        }
    }
}
