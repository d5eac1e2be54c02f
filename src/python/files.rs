//! File descriptors of Python file objects, for sending files without copying them through
//! Python (`wsgi.file_wrapper`).

use std::os::fd::{FromRawFd, OwnedFd};

use pyo3::prelude::*;

/// A regular file behind a Python file-like object: a private duplicate of its descriptor, the
/// object's current offset and the file's size. `None` when the object has no usable descriptor
/// (in-memory files, sockets, pipes) or its offset is unknown.
pub fn regular_file(py: Python<'_>, filelike: &Bound<'_, PyAny>) -> PyResult<Option<RegularFile>> {
    let Some(fileno) = filelike.getattr_opt("fileno")? else {
        return Ok(None);
    };
    let Ok(fd) = fileno.call0().and_then(|fd| fd.extract::<i32>()) else {
        return Ok(None);
    };
    let os = py.import("os")?;
    let stat = py.import("stat")?;
    let st = os.call_method1("fstat", (fd,))?;
    let mode = st.getattr("st_mode")?;
    if !stat.call_method1("S_ISREG", (mode,))?.is_truthy()? {
        return Ok(None);
    }
    let Ok(offset) = filelike
        .call_method0("tell")
        .and_then(|t| t.extract::<u64>())
    else {
        return Ok(None);
    };
    let size: u64 = st.getattr("st_size")?.extract()?;
    let dup: i32 = os.call_method1("dup", (fd,))?.extract()?;
    // SAFETY: `os.dup` has just returned a new descriptor, open and known to no other code;
    // the OwnedFd becomes its only owner and closes it.
    let fd = unsafe { OwnedFd::from_raw_fd(dup) };
    Ok(Some(RegularFile { fd, offset, size }))
}

/// See [`regular_file`].
pub struct RegularFile {
    /// A descriptor of our own for the file.
    pub fd: OwnedFd,
    /// Where the Python object's reads would continue.
    pub offset: u64,
    /// The file's size now.
    pub size: u64,
}
