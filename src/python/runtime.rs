//! Starting and stopping Python in an Apache child process.
//!
//! [`start`] runs in `child_init` (never in the Apache parent): it initialises CPython from a
//! `PyConfig` built from the `WSGIPython*` directives, sets up the main interpreter and releases
//! the GIL. [`run_in`] is how request threads run Python. [`stop`] runs from the child pool's
//! cleanup when the child exits: it ends the sub-interpreters and finalises Python (running
//! `atexit` handlers), under a watchdog that ends the process if that takes too long, so Apache
//! never has to escalate to SIGKILL.

use std::ffi::CString;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::ffi;
use pyo3::prelude::*;

pub use super::interp::threads_waiting_for_gil;
use super::interp::{PythonError, Registry, adopt_main_thread_state};
use super::setup;
use crate::apache::process::ProcessInfo;
use crate::config::PythonSettings;

/// How long `stop` may take before the watchdog ends the process.
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(2500);

struct Runtime {
    settings: PythonSettings,
    info: ProcessInfo,
    registry: Registry,
    /// The thread state of the thread that initialised Python (the child's main thread).
    init_thread_state: Mutex<usize>,
    stopping: AtomicBool,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The settings Python was started with (for per-interpreter setup).
pub(crate) fn settings() -> Option<(&'static PythonSettings, &'static ProcessInfo)> {
    RUNTIME.get().map(|rt| (&rt.settings, &rt.info))
}

/// Initialises Python in this process. Errors are logged; requests then fail with 500.
pub fn start(settings: &PythonSettings, info: &ProcessInfo) {
    if RUNTIME.get().is_some() {
        return;
    }
    // SAFETY: called once per process, from `child_init`, before any other Python use; the
    // config struct is initialised by CPython and cleared after use.
    let registry = match unsafe { initialize(settings) } {
        Ok(registry) => registry,
        Err(message) => {
            tracing::error!("WSGI0003: Python could not be initialised: {message}");
            return;
        }
    };
    // SAFETY: initialisation left the main interpreter's thread state current with the GIL.
    let ts = unsafe { ffi::PyThreadState_Get() };
    adopt_main_thread_state(&registry.main(), ts);
    let runtime = Runtime {
        settings: settings.clone(),
        info: info.clone(),
        registry,
        init_thread_state: Mutex::new(ts as usize),
        stopping: AtomicBool::new(false),
    };
    if RUNTIME.set(runtime).is_err() {
        return;
    }
    // SAFETY: this thread holds the GIL (left by initialisation); the setup job runs through
    // the runner (which needs the GIL) and the GIL is released afterwards for the workers.
    unsafe { ffi::PyEval_SaveThread() };
    let result = run_in("", |py| setup::configure(py, ""));
    if let Err(e) = result {
        tracing::error!("WSGI0004: setting up the main interpreter failed: {e}");
    }
    tracing::info!(
        "Python {} initialised ({})",
        python_version(),
        settings
            .home
            .as_ref()
            .map_or("system prefix".into(), |h| h.display().to_string())
    );
}

/// Runs `job` in the interpreter of application group `group`.
pub fn run_in<R>(group: &str, job: impl FnOnce(Python<'_>) -> R) -> Result<R, PythonError> {
    let rt = RUNTIME.get().ok_or(PythonError::NotRunning)?;
    if rt.stopping.load(Ordering::Acquire) {
        return Err(PythonError::NotRunning);
    }
    rt.registry.run_in(group, &setup::configure, job)
}

/// Ends the interpreters and finalises Python (child exit).
pub fn stop() {
    let Some(rt) = RUNTIME.get() else { return };
    if rt.stopping.swap(true, Ordering::AcqRel) {
        return;
    }
    if !rt.settings.destroy_interpreter {
        tracing::info!("WSGIDestroyInterpreter Off: leaving Python running at exit");
        return;
    }
    start_watchdog();
    tracing::info!("destroying Python interpreters");
    let ts = *rt.init_thread_state.lock() as *mut ffi::PyThreadState;
    // SAFETY: `ts` is this process's initial main-interpreter thread state, not current on any
    // thread now (request threads have finished when the child pool is destroyed; `stopping`
    // keeps new jobs out). Teardown order per CPython's rules: each sub-interpreter's worker
    // states are deleted, then it is ended with its creation state; then Python is finalised.
    unsafe {
        ffi::PyEval_RestoreThread(ts);
        let interpreters = rt.registry.interpreters.lock().clone();
        let mut all_ended = true;
        for interp in interpreters.iter().skip(1) {
            tracing::debug!("ending sub-interpreter '{}'", interp.name);
            for &worker in interp.thread_states.lock().iter() {
                ffi::PyThreadState_Clear(worker);
                ffi::PyThreadState_Delete(worker);
            }
            ffi::PyThreadState_Swap(interp.creation);
            let others = other_threads(interp.state, interp.creation);
            if others == 0 {
                ffi::Py_EndInterpreter(interp.creation);
            } else {
                // Ending an interpreter whose threads still run aborts the process (CPython:
                // "not the last thread"). Run its atexit handlers and leave it to the exit.
                run_atexit();
                tracing::info!(
                    "sub-interpreter '{}' still has {others} thread(s) running; not ending it",
                    interp.name
                );
                all_ended = false;
            }
            ffi::PyThreadState_Swap(ts);
        }
        if all_ended {
            if ffi::Py_FinalizeEx() < 0 {
                tracing::warn!("WSGI0005: Python reported errors while finalising");
            }
            tracing::info!("Python finalised");
        } else {
            // Finalising the main interpreter under live sub-interpreter threads is not safe;
            // its atexit handlers still run.
            run_atexit();
            ffi::PyEval_SaveThread();
            tracing::info!("Python left to the process exit (threads still running)");
        }
    }
}

/// Warns when a virtual environment was made for another Python version than the one this
/// module embeds: its packages would not import.
fn warn_on_version_mismatch(home: &std::path::Path) {
    let Ok(cfg) = std::fs::read_to_string(home.join("pyvenv.cfg")) else {
        return;
    };
    let full = python_version();
    let built: String = full.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
    let venv = cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        matches!(key.trim(), "version" | "version_info").then(|| value.trim().to_owned())
    });
    if let Some(venv) = venv
        && !(venv == built || venv.starts_with(&format!("{built}.")))
    {
        tracing::warn!(
            "WSGI0008: the virtual environment '{}' was made with Python {venv}, but this \
             module embeds Python {built}; its packages may not import",
            home.display()
        );
    }
}

/// Thread states of `interp` other than `except` (threads the application started).
///
/// # Safety
/// The GIL must be held; `interp` must be a live interpreter.
unsafe fn other_threads(
    interp: *mut ffi::PyInterpreterState,
    except: *mut ffi::PyThreadState,
) -> usize {
    let mut count = 0;
    // SAFETY: walking an interpreter's thread list with the GIL held (caller), which keeps it
    // from changing under us.
    unsafe {
        let mut ts = ffi::PyInterpreterState_ThreadHead(interp);
        while !ts.is_null() {
            if ts != except {
                count += 1;
            }
            ts = ffi::PyThreadState_Next(ts);
        }
    }
    count
}

/// Runs the current interpreter's `atexit` handlers now.
///
/// # Safety
/// The GIL must be held with a thread state of the interpreter current.
unsafe fn run_atexit() {
    // SAFETY: GIL held (caller); runs a fixed Python statement; errors are printed by CPython.
    unsafe { ffi::PyRun_SimpleString(c"import atexit; atexit._run_exitfuncs()".as_ptr()) };
}

/// Ends the process if shutdown hangs (a non-daemon thread that never ends, a finaliser that
/// blocks), so Apache's stop and restart stay prompt.
fn start_watchdog() {
    let spawned = std::thread::Builder::new()
        .name("wsgi-watchdog".into())
        .spawn(|| {
            std::thread::sleep(SHUTDOWN_LIMIT);
            tracing::warn!(
                "WSGI0006: Python shutdown took longer than {} ms; ending the process",
                SHUTDOWN_LIMIT.as_millis()
            );
            // SAFETY: `_exit` ends the process at once without running atexit handlers or
            // destructors, which is the point: they are what is stuck.
            unsafe { libc::_exit(0) };
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the shutdown watchdog: {e}");
    }
}

fn python_version() -> String {
    // SAFETY: `Py_GetVersion` returns a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(ffi::Py_GetVersion()) };
    v.to_string_lossy()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// Builds the `PyConfig` and initialises CPython, returning the registry with the main
/// interpreter. The main thread state stays current, holding the GIL.
///
/// # Safety
/// Only once per process, before any other Python call.
unsafe fn initialize(settings: &PythonSettings) -> Result<Registry, String> {
    // SAFETY: the whole body drives CPython's documented PyConfig initialisation sequence on a
    // zeroed struct that `PyConfig_InitPythonConfig` fills in and `PyConfig_Clear` releases.
    unsafe {
        let mut config: ffi::PyConfig = std::mem::zeroed();
        ffi::PyConfig_InitPythonConfig(&mut config);
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        config.optimization_level = i32::from(settings.optimize);
        config.write_bytecode = i32::from(!settings.dont_write_bytecode);
        config.user_site_directory = 0;

        if let Some(home) = &settings.home {
            warn_on_version_mismatch(home);
            // A virtual environment is entered the way its own `bin/python` would be: through
            // the program name, so `site` finds `pyvenv.cfg`. Anything else is a prefix.
            let venv_python = home.join("bin/python");
            let (field, value) = if home.join("pyvenv.cfg").is_file() {
                (&raw mut config.program_name, venv_python)
            } else {
                (&raw mut config.home, home.clone())
            };
            let value = CString::new(value.to_string_lossy().as_bytes())
                .map_err(|_| "WSGIPythonHome contains a NUL byte".to_owned())?;
            let status = ffi::PyConfig_SetBytesString(&mut config, field, value.as_ptr());
            if ffi::PyStatus_Exception(status) != 0 {
                ffi::PyConfig_Clear(&mut config);
                return Err(status_message(&status));
            }
            if !home.is_dir() {
                tracing::warn!(
                    "WSGI0007: WSGIPythonHome '{}' is not a folder; Python may fail to start",
                    home.display()
                );
            }
        }

        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(status_message(&status));
        }
        let py = Python::assume_attached();
        Registry::new_with_main(py).map_err(|e| {
            e.restore(py);
            ffi::PyErr_Print();
            "cannot create the request runner".to_owned()
        })
    }
}

fn status_message(status: &ffi::PyStatus) -> String {
    if status.err_msg.is_null() {
        return "unknown error".into();
    }
    // SAFETY: CPython's status messages are static NUL-terminated strings.
    unsafe { std::ffi::CStr::from_ptr(status.err_msg) }
        .to_string_lossy()
        .into_owned()
}
