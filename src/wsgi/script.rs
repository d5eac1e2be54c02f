//! Loading WSGI script files as Python modules, and reloading them when they change.
//!
//! A script becomes the module `_mod_wsgi_<md5 of its path>` in the current interpreter's
//! `sys.modules`, with `__file__` set and, once it has run to the end, the file's modification
//! time (µs) as `__mtime__`.
//! With reloading on, a module whose `__mtime__` differs from the file's is loaded again. Loads
//! are serialised per interpreter with a Python lock (`mod_wsgi._load_lock`), which releases the
//! GIL while it waits, so two threads never execute the same script at once.

use md5::{Digest, Md5};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};

/// The module name of the script at `path`.
pub fn module_name(path: &str) -> String {
    let digest = Md5::digest(path.as_bytes());
    let mut name = String::with_capacity(10 + 32);
    name.push_str("_mod_wsgi_");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in digest {
        name.push(char::from(HEX[usize::from(byte >> 4)]));
        name.push(char::from(HEX[usize::from(byte & 15)]));
    }
    name
}

/// A modification time as `load` compares it: microseconds since the epoch, 0 when unknown.
pub fn mtime_micros(modified: Option<std::time::SystemTime>) -> i64 {
    modified
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The modification time of the file at `path` (see [`mtime_micros`]).
pub fn file_mtime(path: impl AsRef<std::path::Path>) -> i64 {
    mtime_micros(std::fs::metadata(path).and_then(|m| m.modified()).ok())
}

/// The loaded module of the script at `path` (whose current mtime is `mtime`), loading or
/// reloading it as needed. With reloading on, a script module may also define
/// `reload_required(path)`: a true result reloads it (an exception is logged and ignored).
pub fn load<'py>(
    py: Python<'py>,
    path: &str,
    mtime: i64,
    reloading: bool,
) -> PyResult<Bound<'py, PyModule>> {
    let name = module_name(path);
    let modules = crate::python::modules_dict(py)?;
    let mut forced = false;
    if let Some(module) = current(&modules, &name, mtime, reloading)? {
        if !reloading || !reload_required(py, &module, path) {
            return Ok(module);
        }
        forced = true;
    }

    let lock = py.import("mod_wsgi")?.getattr("_load_lock")?;
    lock.call_method0("acquire")?;
    let loaded = (|| {
        // Another thread may have loaded it while this one waited.
        if !forced && let Some(module) = current(&modules, &name, mtime, reloading)? {
            return Ok(module);
        }
        if modules.contains(&name)? {
            tracing::info!("reloading WSGI script '{path}'");
            modules.del_item(&name)?;
        }
        exec_script(py, &modules, &name, path, mtime)
    })();
    lock.call_method0("release")?;
    loaded
}

/// The module's own verdict on whether it must be reloaded (`reload_required(path)`).
fn reload_required(py: Python<'_>, module: &Bound<'_, PyModule>, path: &str) -> bool {
    // A look-up in the module's dict (as C mod_wsgi does): a missing attribute then raises no
    // AttributeError, whose formatting showed up in the profile of every request.
    let verdict = module
        .dict()
        .get_item("reload_required")
        .and_then(|f| f.map(|f| f.call1((path,))?.is_truthy()).transpose());
    match verdict {
        Ok(verdict) => verdict.unwrap_or(false),
        Err(e) => {
            crate::wsgi::report_exception(py, e, &format!("calling reload_required('{path}')"));
            false
        }
    }
}

/// The loaded module, if it is there and (with reloading on) its `__mtime__` is `mtime`.
fn current<'py>(
    modules: &Bound<'py, PyDict>,
    name: &str,
    mtime: i64,
    reloading: bool,
) -> PyResult<Option<Bound<'py, PyModule>>> {
    let Some(module) = modules.get_item(name)? else {
        return Ok(None);
    };
    let Ok(module) = module.cast_into::<PyModule>() else {
        return Ok(None);
    };
    // `__mtime__` is set once the script has run to the end: a module still being executed by
    // another thread is not current.
    let Some(loaded_mtime) = module.getattr_opt("__mtime__")? else {
        return Ok(None);
    };
    if !reloading {
        return Ok(Some(module));
    }
    let loaded_mtime = loaded_mtime.extract::<i64>().ok();
    Ok((loaded_mtime == Some(mtime)).then_some(module))
}

fn exec_script<'py>(
    py: Python<'py>,
    modules: &Bound<'py, PyDict>,
    name: &str,
    path: &str,
    mtime: i64,
) -> PyResult<Bound<'py, PyModule>> {
    let source = py.detach(|| std::fs::read(path))?;
    let builtins = py.import("builtins")?;
    let code = builtins
        .getattr("compile")?
        .call1((source, path, "exec", 0, true))?;
    let module = PyModule::new(py, name)?;
    module.setattr("__file__", path)?;
    modules.set_item(name, &module)?;
    let globals = module.dict();
    if let Err(e) = builtins.getattr("exec")?.call1((code, &globals)) {
        let _ = modules.del_item(name);
        return Err(e);
    }
    module.setattr("__mtime__", mtime)?;
    Ok(module)
}

#[cfg(test)]
mod tests {
    #[test]
    fn module_names_are_md5_of_the_path() {
        // md5("/srv/app.wsgi")
        assert_eq!(
            super::module_name("/srv/app.wsgi").len(),
            "_mod_wsgi_".len() + 32
        );
        assert_eq!(
            super::module_name(""),
            "_mod_wsgi_d41d8cd98f00b204e9800998ecf8427e"
        );
    }
}
