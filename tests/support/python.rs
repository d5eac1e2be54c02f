//! Shared Python virtualenvs for the WSGI apps under test: built once per package list
//! with Debian's Python 3.11 (the one the module embeds), reused by every test process.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{TEST_ROOT, create_world_readable_dir};

/// The interpreter the venvs are made from.
const PYTHON: &str = "/usr/bin/python3.11";

/// File written into a venv once it is complete.
const READY_MARKER: &str = ".mod-wsgi-rs-ready";

/// A virtualenv at `/tmp/mod-wsgi-rs-test/venv-<hash of the sorted package list>` with
/// `packages` pip-installed (pip requirement specifiers, e.g. `"flask"` or
/// `"django==4.2.*"`), readable by everyone. Returns the venv directory; its interpreter
/// is `<venv>/bin/python`.
///
/// The venv is built once and reused by later calls, in this process or any other. An
/// exclusive lock on `venv-<hash>.lock` serialises builders, and a marker written last
/// makes a half-built venv (from a killed process) get rebuilt. Panics with the output
/// of `venv` or pip if either fails.
pub fn python_venv(packages: &[&str]) -> PathBuf {
    let mut sorted: Vec<&str> = packages.iter().map(|p| p.trim()).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let key = sorted.join("\n");
    let hash = fnv1a(key.as_bytes()) >> 16;
    let root = Path::new(TEST_ROOT);
    create_world_readable_dir(root);
    let venv = root.join(format!("venv-{hash:012x}"));
    let lock_path = root.join(format!("venv-{hash:012x}.lock"));

    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_path.display()));
    // File::lock is newer (1.89) than the crate's declared rust-version; the toolchain that
    // builds the project has it.
    #[allow(clippy::incompatible_msrv)]
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));

    let marker = venv.join(READY_MARKER);
    if marker.is_file() {
        return venv;
    }
    if venv.exists() {
        fs::remove_dir_all(&venv)
            .unwrap_or_else(|e| panic!("cannot remove half-built {}: {e}", venv.display()));
    }
    run(Command::new(PYTHON).arg("-m").arg("venv").arg(&venv));
    if !sorted.is_empty() {
        run(Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(&sorted));
    }
    make_world_readable(&venv);
    fs::write(&marker, key.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", marker.display()));
    fs::set_permissions(&marker, fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", marker.display()));
    drop(lock);
    venv
}

/// Runs `command` to completion, panicking with its output if it fails.
fn run(command: &mut Command) {
    command
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("VIRTUAL_ENV")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Gives everyone read access to every file under `dir`, and search access to every
/// directory and to every file its owner can execute. Symlinks are left alone.
fn make_world_readable(dir: &Path) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    set_mode_bits(dir, 0o055);
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
        if meta.is_dir() {
            make_world_readable(&path);
        } else if meta.is_file() {
            let owner_exec = meta.permissions().mode() & 0o100 != 0;
            set_mode_bits(&path, if owner_exec { 0o055 } else { 0o044 });
        }
    }
}

/// Adds `bits` to the permission bits of `path` if any are missing.
fn set_mode_bits(path: &Path, bits: u32) {
    let mode = fs::metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
        .permissions()
        .mode();
    if mode & bits != bits {
        fs::set_permissions(path, fs::Permissions::from_mode(mode | bits))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
    }
}

/// 64-bit FNV-1a: a hash that stays the same across processes and Rust releases.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
