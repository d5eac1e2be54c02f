//! Interpreters and thread states: which Python interpreter a request runs in, and how a worker
//! thread enters it.
//!
//! The rules come from how CPython 3.11 behaves with sub-interpreters (see
//! `docs/architecture.md`):
//! - `PyGILState_*` (and so pyo3's `Python::attach`) is never used on a request path. Each OS
//!   thread keeps one `PyThreadState` per interpreter, made on first use, and enters with
//!   `PyEval_RestoreThread`/leaves with `PyEval_SaveThread`.
//! - A thread's first thread state is a main-interpreter one, so C extensions that use the
//!   `PyGILState` API consistently land in the main interpreter (`%{GLOBAL}`).
//! - A sub-interpreter is created while holding a main-interpreter thread state; its creation
//!   thread state is kept, unused, until the interpreter is ended with it.
//! - The registry mutex is only taken while not holding the GIL (lock order: registry, GIL).
//! - Work runs inside a call to a small Rust function exposed to Python (the "runner"), so pyo3
//!   sees the thread as attached for the whole job: Python objects dropped by Rust code are
//!   released at once, in the right interpreter, never queued for a later thread.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use pyo3::ffi;
use pyo3::prelude::*;

/// Threads of this process waiting in [`Registry::run_in`] to take the GIL.
static WAITING_FOR_GIL: AtomicUsize = AtomicUsize::new(0);

/// How many threads are waiting to take the GIL to start a job: more than none means some
/// thread holds it and Python has work queued behind it.
pub fn threads_waiting_for_gil() -> usize {
    WAITING_FOR_GIL.load(Ordering::Relaxed)
}

/// Why a job could not run in Python.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PythonError {
    /// Python is not (or no longer) running in this process.
    #[error("Python is not running in this process")]
    NotRunning,
    /// This thread is already inside Python (a job tried to start another).
    #[error("this thread is already running Python code")]
    Reentered,
    /// A new sub-interpreter could not be made.
    #[error("cannot create the Python interpreter for application group '{0}'")]
    Creation(String),
    /// The job panicked; the panic was caught and logged.
    #[error("internal error while running Python code")]
    Panicked,
}

/// One interpreter of this process.
pub(crate) struct Interpreter {
    /// The application group name (`""` for the main interpreter).
    pub(crate) name: String,
    pub(crate) state: *mut ffi::PyInterpreterState,
    /// Sub-interpreters: the thread state `Py_NewInterpreter` returned, kept to end it.
    pub(crate) creation: *mut ffi::PyThreadState,
    /// The runner function object of this interpreter (a strong reference we own).
    runner: *mut ffi::PyObject,
    /// Every worker thread state made for this interpreter, to delete at shutdown.
    pub(crate) thread_states: Mutex<Vec<*mut ffi::PyThreadState>>,
}

// SAFETY: the raw pointers are CPython objects that are only used with the GIL held (or, for
// `PyThreadState_New`, by CPython's own locking); the registry shares them between threads the
// way CPython itself expects interpreters to be shared.
unsafe impl Send for Interpreter {}
// SAFETY: as above; mutation goes through the mutex.
unsafe impl Sync for Interpreter {}

/// All interpreters of this process, main first.
pub(crate) struct Registry {
    pub(crate) interpreters: Mutex<Vec<Arc<Interpreter>>>,
}

thread_local! {
    /// This thread's thread states, one per interpreter (keyed by interpreter address); the
    /// first is always the main interpreter's.
    static THREAD_STATES: RefCell<Vec<(usize, *mut ffi::PyThreadState)>> =
        const { RefCell::new(Vec::new()) };
    /// True while this thread runs a job.
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
    /// The job the runner function calls.
    static JOB: Cell<Option<JobPtr>> = const { Cell::new(None) };
}

/// A type-erased pointer to the closure a runner call executes.
type JobPtr = *mut dyn FnMut(Python<'_>);

/// Called from Python (the runner): runs this thread's pending job.
#[pyfunction]
fn mod_wsgi_run_job(py: Python<'_>) {
    if let Some(job) = JOB.with(Cell::take) {
        // SAFETY: `job` was stored by `call_runner` on this thread and points at a closure that
        // lives on `call_runner`'s stack until the runner call returns, which is after this.
        unsafe { (*job)(py) };
    }
}

impl Registry {
    /// The registry of a freshly initialised Python: just the main interpreter, whose runner is
    /// made here.
    ///
    /// # Safety
    /// The calling thread must hold the GIL of the main interpreter.
    pub(crate) unsafe fn new_with_main(py: Python<'_>) -> PyResult<Self> {
        // SAFETY: GIL held (caller).
        let state = unsafe { ffi::PyInterpreterState_Main() };
        let runner = wrap_pyfunction!(mod_wsgi_run_job, py)?
            .into_any()
            .into_ptr();
        let main = Interpreter {
            name: String::new(),
            state,
            creation: std::ptr::null_mut(),
            runner,
            thread_states: Mutex::new(Vec::new()),
        };
        Ok(Self {
            interpreters: Mutex::new(vec![Arc::new(main)]),
        })
    }

    /// The main interpreter.
    pub(crate) fn main(&self) -> Arc<Interpreter> {
        Arc::clone(&self.interpreters.lock()[0])
    }

    /// Runs `job` in the interpreter of application group `group` (`""`: main), creating it
    /// (and running `setup` in it) on first use.
    pub(crate) fn run_in<R>(
        &self,
        group: &str,
        setup: &dyn Fn(Python<'_>, &str),
        job: impl FnOnce(Python<'_>) -> R,
    ) -> Result<R, PythonError> {
        if IN_JOB.with(Cell::get) {
            return Err(PythonError::Reentered);
        }
        let main = self.main();
        let main_ts = thread_state(&main);
        let interp = if group.is_empty() {
            main
        } else {
            self.get_or_create(group, main_ts, setup)?
        };
        let ts = thread_state(&interp);
        IN_JOB.with(|c| c.set(true));
        let _reset = ResetInJob;
        WAITING_FOR_GIL.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ts` belongs to this thread and to `interp`; the GIL is not held here
        // (IN_JOB was false); it is released again before returning.
        unsafe { ffi::PyEval_RestoreThread(ts) };
        WAITING_FOR_GIL.fetch_sub(1, Ordering::Relaxed);
        let result = call_runner(&interp, job);
        // SAFETY: this thread holds the GIL with `ts` current (restored above).
        unsafe { ffi::PyEval_SaveThread() };
        result
    }

    fn get_or_create(
        &self,
        group: &str,
        main_ts: *mut ffi::PyThreadState,
        setup: &dyn Fn(Python<'_>, &str),
    ) -> Result<Arc<Interpreter>, PythonError> {
        let mut all = self.interpreters.lock();
        if let Some(found) = all.iter().find(|i| i.name == group) {
            return Ok(Arc::clone(found));
        }
        tracing::info!("creating sub-interpreter '{group}'");
        // SAFETY: lock order registry → GIL: we hold the registry lock and not the GIL.
        // `main_ts` is this thread's main-interpreter state, so the new interpreter is made
        // from the main one, as CPython requires.
        let created = unsafe {
            ffi::PyEval_RestoreThread(main_ts);
            let creation = ffi::Py_NewInterpreter();
            if creation.is_null() {
                ffi::PyThreadState_Swap(main_ts);
                ffi::PyEval_SaveThread();
                return Err(PythonError::Creation(group.to_owned()));
            }
            // The new interpreter's state is current and holds the GIL.
            let py = Python::assume_attached();
            let runner = match wrap_pyfunction!(mod_wsgi_run_job, py) {
                Ok(f) => f.into_any().into_ptr(),
                Err(e) => {
                    e.restore(py);
                    ffi::PyErr_Print();
                    ffi::Py_EndInterpreter(creation);
                    ffi::PyThreadState_Swap(main_ts);
                    ffi::PyEval_SaveThread();
                    return Err(PythonError::Creation(group.to_owned()));
                }
            };
            let interp = Arc::new(Interpreter {
                name: group.to_owned(),
                state: ffi::PyThreadState_GetInterpreter(creation),
                creation,
                runner,
                thread_states: Mutex::new(Vec::new()),
            });
            // Setup runs through the runner, like any job, so pyo3 sees the thread attached.
            if call_runner(&interp, |py| setup(py, group)).is_err() {
                tracing::error!("WSGI0002: setting up sub-interpreter '{group}' failed");
            }
            ffi::PyEval_SaveThread();
            interp
        };
        all.push(Arc::clone(&created));
        Ok(created)
    }
}

struct ResetInJob;

impl Drop for ResetInJob {
    fn drop(&mut self) {
        IN_JOB.with(|c| c.set(false));
    }
}

/// This thread's thread state for `interp`, made (and recorded for shutdown) on first use.
fn thread_state(interp: &Interpreter) -> *mut ffi::PyThreadState {
    let key = interp.state as usize;
    THREAD_STATES.with(|states| {
        let mut states = states.borrow_mut();
        if let Some(&(_, ts)) = states.iter().find(|(k, _)| *k == key) {
            return ts;
        }
        // SAFETY: `PyThreadState_New` does not need the GIL; `interp.state` is a live
        // interpreter (interpreters are only ended at process shutdown, after request threads
        // have stopped).
        let ts = unsafe { ffi::PyThreadState_New(interp.state) };
        interp.thread_states.lock().push(ts);
        states.push((key, ts));
        ts
    })
}

/// Makes `ts` this thread's main-interpreter state (for the thread that initialised Python).
pub(crate) fn adopt_main_thread_state(main: &Interpreter, ts: *mut ffi::PyThreadState) {
    THREAD_STATES.with(|states| states.borrow_mut().insert(0, (main.state as usize, ts)));
}

/// Calls the interpreter's runner with `job` as this thread's pending job.
///
/// Must be called with the GIL held and a thread state of `interp` current.
fn call_runner<R>(
    interp: &Interpreter,
    job: impl FnOnce(Python<'_>) -> R,
) -> Result<R, PythonError> {
    let mut job = Some(job);
    let mut out = None;
    let mut closure = |py: Python<'_>| {
        if let Some(job) = job.take() {
            out = Some(job(py));
        }
    };
    let erased: *mut (dyn FnMut(Python<'_>) + '_) = &mut closure;
    // SAFETY: only the lifetime bound is changed; the pointer is taken back out of JOB (by the
    // runner, or below) before `closure` goes out of scope.
    let erased: JobPtr = unsafe { std::mem::transmute(erased) };
    JOB.with(|slot| slot.set(Some(erased)));
    // SAFETY: GIL held with a thread state of `interp` current (caller's contract); `runner`
    // is a live function object of that interpreter. The result is a new reference or NULL.
    let result = unsafe { ffi::PyObject_CallNoArgs(interp.runner) };
    JOB.with(Cell::take);
    if result.is_null() {
        // A panic inside the job, turned into a Python exception by pyo3.
        // SAFETY: GIL held; prints and clears the pending exception.
        unsafe { ffi::PyErr_Print() };
        return Err(PythonError::Panicked);
    }
    // SAFETY: GIL held; `result` is a new reference (None) we own.
    unsafe { ffi::Py_DecRef(result) };
    out.ok_or(PythonError::Panicked)
}
