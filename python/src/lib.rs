//! `ckptpilot._ckptpilot`: the extension module behind the Python package. It runs ckptpilot's own
//! command line in-process (the `ckptpilot` console script, and the `--json` reports the Python API
//! returns, captured as the very bytes the command prints), and exposes the fp8 kernel over bytes.
//! Everything here releases the GIL while Rust runs.

use ckptpilot::checkpoint::dtype::Dtype;
use ckptpilot::quant::fp8::{self, Fp8Format, OutDtype, Scales};
use ckptpilot::quant::scheme::ScaleLayout;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};
use std::ffi::OsString;

/// Run the command line `argv` (program name first), printing as the binary does; the exit status.
#[pyfunction]
fn _cli(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| ckptpilot::cli::main_with(argv.into_iter().map(OsString::from)))
}

/// Run `argv` with its report captured: (exit status, stdout bytes, [(error, help), ...]).
#[pyfunction]
fn _run_captured<'py>(py: Python<'py>, argv: Vec<String>) -> (u8, Bound<'py, PyBytes>, Vec<(String, String)>) {
    let (status, got) = py.detach(|| ckptpilot::cli::run_captured(argv.into_iter().map(OsString::from)));
    (status, PyBytes::new(py, &got.stdout), got.errors)
}

/// fp8 codes (`weight`, `shape` = [..., N, K]) times f32 `scale` (its layout: "block" with
/// `block` = (bn, bk), "channel" or "tensor") into `out_dtype` ("bfloat16", "float16", "float32"),
/// as little-endian bytes (a bytearray: arrays over it are writable). The kernel of
/// `ckptpilot dequant`: exact decode, one f32 multiply, one rounding (to nearest even).
#[pyfunction]
#[pyo3(signature = (weight, shape, fmt, scale, layout, block=None, out_dtype="bfloat16"))]
#[allow(clippy::too_many_arguments)]
fn _dequantize_fp8<'py>(
    py: Python<'py>,
    weight: &[u8],
    shape: Vec<u64>,
    fmt: &str,
    scale: &[u8],
    layout: &str,
    block: Option<(u64, u64)>,
    out_dtype: &str,
) -> PyResult<Bound<'py, PyByteArray>> {
    let fmt = match fmt {
        "e4m3" => Fp8Format::E4M3,
        "e5m2" => Fp8Format::E5M2,
        _ => return Err(PyValueError::new_err(format!("fmt {fmt:?}: expected 'e4m3' or 'e5m2'"))),
    };
    let layout = match (layout, block) {
        ("block", Some((n, k))) if n > 0 && k > 0 => ScaleLayout::Block { n, k },
        ("block", _) => return Err(PyValueError::new_err("a block layout needs block=(bn, bk), both positive")),
        ("channel", _) => ScaleLayout::Channel,
        ("tensor", _) => ScaleLayout::Tensor,
        _ => return Err(PyValueError::new_err(format!("layout {layout:?}: expected 'block', 'channel' or 'tensor'"))),
    };
    if scale.len() % 4 != 0 {
        return Err(PyValueError::new_err(format!("scale: {} bytes is not a whole number of float32", scale.len())));
    }
    let scales = fp8::scales_to_f32(scale, Dtype::F32).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let out = OutDtype::parse(out_dtype).ok_or_else(|| {
        PyValueError::new_err(format!("out_dtype {out_dtype:?}: expected bfloat16, float16 or float32"))
    })?;
    // The kernel runs without the GIL; its output is copied once into the bytearray.
    let result = py.detach(|| fp8::dequantize_new(weight, &shape, fmt, Scales { values: &scales, layout }, out));
    let d = result.map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyByteArray::new(py, d.as_le_bytes()))
}

#[pymodule]
fn _ckptpilot(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("VLLM_REFERENCE", ckptpilot::audit::VLLM_REFERENCE)?;
    m.add_function(wrap_pyfunction!(_cli, m)?)?;
    m.add_function(wrap_pyfunction!(_run_captured, m)?)?;
    m.add_function(wrap_pyfunction!(_dequantize_fp8, m)?)?;
    Ok(())
}
