//! The last line of defence at the C boundary: a Rust panic must not unwind into LiteRT or a C
//! caller (that aborts the process). Every `extern "C"` entry point runs its body in [`guard`].

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `body`; a panic becomes `Err` with `what` and its message. The state `body` touched is
/// only used to report the error afterwards, so unwind safety is not a concern.
pub fn guard<T>(what: &str, body: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(body)).map_err(|payload| format!("{what}: internal error ({})", panic_message(&*payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        assert_eq!(guard("f", || 3), Ok(3));
        let err = guard("KerasAttnSE Run", || -> i32 { panic!("index {} out of range", 7) }).unwrap_err();
        assert_eq!(err, "KerasAttnSE Run: internal error (index 7 out of range)");
        assert!(guard("g", || std::panic::panic_any(5u8)).unwrap_err().contains("without a message"));
    }
}
