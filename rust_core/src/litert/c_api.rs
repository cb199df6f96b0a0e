//! The C entry points (declared in `include/keras_attn_litert.h`): add every fused kernel to a
//! `LiteRtOptions`, resolving LiteRT's functions from the process (the application links
//! `libLiteRt.so`), and verify a model file. None lets a panic out (see [`ffi`]).

use super::{api, ffi, verify};
use super::kernel::{fused_weights_are_constant, Kernels};
use super::ops::GateWeights;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

/// Registers the fused kernels on `options`, for compiling `model` (a `LiteRtModel`, or NULL),
/// running them on `threads` threads (0: every core). With `model` given and the weights of its
/// fused ops all constant, each node's block is built once and kept until the compiled model is
/// destroyed; with NULL, every run rebuilds it. Returns a handle to release with
/// `keras_attn_litert_release` after the compiled model is destroyed, or NULL on failure (the
/// reason is printed to stderr).
///
/// # Safety
/// `options` must be a live `LiteRtOptions`, `model` a live `LiteRtModel` or NULL; the options
/// then compile that model only.
#[no_mangle]
pub unsafe extern "C" fn keras_attn_litert_register(options: *mut c_void, model: *mut c_void, threads: c_int) -> *mut c_void {
    register("keras_attn_litert_register", options, model, threads, 0)
}

/// `flags` bit: a float32 model's fused ops compute their gate MLPs with int8 weights.
pub const INT8_GATE_WEIGHTS: c_uint = 1;

/// [`keras_attn_litert_register`] with `flags`: [`INT8_GATE_WEIGHTS`] or 0; another bit fails
/// (NULL, the reason printed to stderr).
///
/// # Safety
/// As [`keras_attn_litert_register`].
#[no_mangle]
pub unsafe extern "C" fn keras_attn_litert_register_with_flags(options: *mut c_void, model: *mut c_void, threads: c_int, flags: c_uint) -> *mut c_void {
    register("keras_attn_litert_register_with_flags", options, model, threads, flags)
}

/// # Safety
/// As [`keras_attn_litert_register`].
unsafe fn register(name: &str, options: *mut c_void, model: *mut c_void, threads: c_int, flags: c_uint) -> *mut c_void {
    let threads = usize::try_from(threads).ok().filter(|&t| t > 0);
    let result = ffi::guard(name, || {
        if flags & !INT8_GATE_WEIGHTS != 0 {
            return Err(format!("unknown flags {flags:#x} (known: KERAS_ATTN_INT8_GATE_WEIGHTS = {INT8_GATE_WEIGHTS})"));
        }
        let gates = if flags & INT8_GATE_WEIGHTS != 0 { GateWeights::Int8 } else { GateWeights::AsMap };
        api::api(None).and_then(|api| {
            let cache_blocks = !model.is_null() && fused_weights_are_constant(api, model);
            Kernels::register(api, options, threads, gates, cache_blocks)
        })
    })
    .and_then(|r| r);
    match result {
        Ok(kernels) => Box::into_raw(kernels) as *mut c_void,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::ptr::null_mut()
        }
    }
}

/// The errors the kernels recorded since the last call (malformed attributes, wrong inputs), one
/// per line, written into `buffer` (NUL-terminated, truncated to `size`); returns their count.
///
/// # Safety
/// `handle` comes from `keras_attn_litert_register`; `buffer` holds `size` bytes (or is NULL).
#[no_mangle]
pub unsafe extern "C" fn keras_attn_litert_take_errors(handle: *mut c_void, buffer: *mut c_char, size: usize) -> c_int {
    if handle.is_null() {
        return 0;
    }
    let errors = ffi::guard("keras_attn_litert_take_errors", || (*(handle as *const Kernels)).take_errors()).unwrap_or_else(|e| vec![e]);
    write_message(&errors.join("\n"), buffer, size);
    c_int::try_from(errors.len()).unwrap_or(c_int::MAX)
}

/// Writes `text` into `buffer` of `size` bytes, NUL-terminated and truncated to fit.
///
/// # Safety
/// `buffer` holds `size` bytes, or is NULL.
unsafe fn write_message(text: &str, buffer: *mut c_char, size: usize) {
    if !buffer.is_null() && size > 0 {
        let n = text.len().min(size - 1);
        // SAFETY: `n < size` bytes fit in `buffer`, and the NUL at `n` too.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buffer as *mut u8, n);
            *buffer.add(n) = 0;
        }
    }
}

/// Checks the `size` bytes at `data`, a whole `.tflite` file, before LiteRT reads them (LiteRT
/// does not verify the flatbuffer, and a corrupted one can crash it): returns 1 when the model
/// is sound, else 0 with the reason written into `error` (NUL-terminated, truncated to
/// `error_size`; may be NULL).
///
/// # Safety
/// `data` holds `size` readable bytes; `error` holds `error_size` bytes (or is NULL).
#[no_mangle]
pub unsafe extern "C" fn keras_attn_litert_verify(data: *const c_void, size: usize, error: *mut c_char, error_size: usize) -> c_int {
    let bytes = if data.is_null() { &[][..] } else { std::slice::from_raw_parts(data as *const u8, size) };
    match ffi::guard("keras_attn_litert_verify", || verify::verify_model(bytes)).and_then(|r| r) {
        Ok(()) => 1,
        Err(e) => {
            write_message(&e, error, error_size);
            0
        }
    }
}

/// Releases a handle from `keras_attn_litert_register` (NULL is ignored).
///
/// # Safety
/// `handle` comes from `keras_attn_litert_register`, and no compiled model uses it any more.
#[no_mangle]
pub unsafe extern "C" fn keras_attn_litert_release(handle: *mut c_void) {
    if !handle.is_null() {
        if let Err(e) = ffi::guard("keras_attn_litert_release", || drop(Box::from_raw(handle as *mut Kernels))) {
            eprintln!("{e}");
        }
    }
}

/// The crate version, a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn keras_attn_litert_version() -> *const c_char {
    static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("version has a NUL"),
    };
    VERSION.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_register_flags_fail_before_touching_the_options() {
        // SAFETY: with an unknown flag the call returns before it reads `options` or `model`.
        let handle = unsafe { keras_attn_litert_register_with_flags(std::ptr::null_mut(), std::ptr::null_mut(), 1, 2) };
        assert!(handle.is_null());
    }
}
