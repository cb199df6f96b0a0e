//! keras-attn's CPU core: pure kernels over slices, and (with the `python` feature) the thin
//! PyO3 layer that exposes them as `keras_attn._rust`.

pub mod apply;
pub mod bandwidth;
pub mod blocks;
pub mod exec;
pub mod layout;
pub mod litert;
pub mod pool;
pub mod simd;
pub mod team;

#[cfg(feature = "python")]
mod python;

#[cfg(test)]
mod test_util;

/// The crate version, which is also the Python package's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_semver() {
        let parts: Vec<&str> = super::VERSION.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()));
    }
}
