//! The `keras_attn._rust` extension module: thin wrappers only (validate, release the GIL, return
//! new arrays). Kernels live in their own modules and know nothing of Python.

use pyo3::prelude::*;

/// The version of the compiled core.
#[pyfunction]
fn version() -> &'static str {
    crate::VERSION
}

#[pymodule]
fn _rust(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add("__version__", crate::VERSION)?;
    Ok(())
}
