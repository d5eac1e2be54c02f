//! The WSGI module itself: where it is (`module-location`), the lines that load it into an
//! existing Apache configuration (`module-config`), and copying it into Apache's modules folder
//! (`install-module`).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cli::{InstallArgs, ModuleArgs, ModuleConfigArgs};
use super::config::{self, path_arg};
use super::error::{ExpressError, Result};
use super::setup::{absolute, resolve_python_home};

/// The file name cargo gives the module.
pub const MODULE_FILE: &str = "libmod_wsgi.so";
/// The name `install-module` installs it under.
pub const INSTALLED_NAME: &str = "mod_wsgi.so";

/// The module to use: `--module`, or `libmod_wsgi.so` in the folder of this program (cargo
/// builds both into `target/<profile>/`). Fails if the file does not exist.
pub fn module_path(args: &ModuleArgs) -> Result<PathBuf> {
    let path = match &args.module {
        Some(path) => absolute(path)?,
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| ExpressError::io("find the path of", "mod_wsgi-express", e))?;
            exe.parent().unwrap_or(Path::new("/")).join(MODULE_FILE)
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(ExpressError::ModuleMissing(path))
    }
}

/// The lines that load `module` (and set the Python home) in an Apache configuration.
pub fn config_lines(module: &Path, python_home: Option<&Path>) -> Result<String> {
    check(module, python_home)?;
    let mut lines = format!("LoadModule wsgi_module {}\n", path_arg(module));
    if let Some(home) = python_home {
        lines.push_str(&format!("WSGIPythonHome {}\n", path_arg(home)));
    }
    Ok(lines)
}

fn check(module: &Path, python_home: Option<&Path>) -> Result<()> {
    config::check_value("the WSGI module", &module.to_string_lossy())?;
    if let Some(home) = python_home {
        config::check_value("the Python home", &home.to_string_lossy())?;
    }
    Ok(())
}

/// `module-location`: the module's path, one line.
pub fn location(args: &ModuleArgs) -> Result<String> {
    Ok(format!("{}\n", module_path(args)?.display()))
}

/// `module-config`: the lines to paste into httpd.conf.
pub fn module_config(args: &ModuleConfigArgs) -> Result<String> {
    let module = module_path(&args.module)?;
    let home = resolve_python_home(args.python_home.as_deref())?;
    config_lines(&module, home.as_deref())
}

/// What `install-module` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The installed file.
    pub path: PathBuf,
    /// Where the file it replaced was kept, if there was one.
    pub backup: Option<PathBuf>,
    /// The lines to add to httpd.conf.
    pub config: String,
}

/// `install-module`: copies the module into the modules folder as `mod_wsgi.so` (keeping a
/// different file already there as `mod_wsgi.so.orig`, or `.orig.1`, `.orig.2`, ...).
pub fn install(args: &InstallArgs) -> Result<Installed> {
    let source = module_path(&args.module)?;
    let dir = match &args.modules_directory {
        Some(dir) => absolute(dir)?,
        None => apxs_libexecdir()?,
    };
    if !dir.is_dir() {
        return Err(ExpressError::NotFound {
            what: "the modules folder",
            path: dir,
        });
    }
    let target = dir.join(INSTALLED_NAME);
    let home = resolve_python_home(args.python_home.as_deref())?;
    let config = config_lines(&target, home.as_deref())?;
    let new = fs::read(&source).map_err(|e| ExpressError::io("read", &source, e))?;
    let backup = match fs::read(&target) {
        Ok(old) if old == new => None,
        Ok(_) => {
            let backup = free_backup_name(&target);
            fs::rename(&target, &backup).map_err(|e| ExpressError::io("rename", &target, e))?;
            Some(backup)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(ExpressError::io("read", &target, e)),
    };
    // Written beside the target and renamed over it, so that a running Apache that has the
    // old file mapped keeps its copy intact.
    let tmp = dir.join(format!(".{INSTALLED_NAME}.tmp"));
    fs::write(&tmp, &new).map_err(|e| ExpressError::io("write", &tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
        .map_err(|e| ExpressError::io("change the mode of", &tmp, e))?;
    fs::rename(&tmp, &target).map_err(|e| ExpressError::io("write", &target, e))?;
    Ok(Installed {
        path: target,
        backup,
        config,
    })
}

/// `mod_wsgi.so.orig`, or the first of `mod_wsgi.so.orig.1`, `.orig.2`, ... that is free.
fn free_backup_name(target: &Path) -> PathBuf {
    let base = format!("{}.orig", target.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while fs::symlink_metadata(&candidate).is_ok() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

/// Apache's modules folder as `apxs -q LIBEXECDIR` tells it.
fn apxs_libexecdir() -> Result<PathBuf> {
    let apxs = std::env::var_os("APXS").unwrap_or_else(|| "apxs".into());
    let output = Command::new(&apxs)
        .args(["-q", "LIBEXECDIR"])
        .output()
        .map_err(|e| ExpressError::Apxs(format!("cannot run {}: {e}", apxs.to_string_lossy())))?;
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || dir.is_empty() {
        return Err(ExpressError::Apxs(format!(
            "it failed with {}",
            output.status
        )));
    }
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines_name_the_module_and_the_python_home() {
        let lines = config_lines(Path::new("/m/mod_wsgi.so"), Some(Path::new("/venv"))).unwrap();
        assert_eq!(
            lines,
            "LoadModule wsgi_module /m/mod_wsgi.so\nWSGIPythonHome /venv\n"
        );
        let lines = config_lines(Path::new("/a b/mod_wsgi.so"), None).unwrap();
        assert_eq!(lines, "LoadModule wsgi_module \"/a b/mod_wsgi.so\"\n");
    }

    #[test]
    fn backups_get_the_first_free_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("mod_wsgi.so");
        assert_eq!(
            free_backup_name(&target),
            dir.path().join("mod_wsgi.so.orig")
        );
        fs::write(dir.path().join("mod_wsgi.so.orig"), "x").unwrap();
        fs::write(dir.path().join("mod_wsgi.so.orig.1"), "x").unwrap();
        assert_eq!(
            free_backup_name(&target),
            dir.path().join("mod_wsgi.so.orig.2")
        );
    }
}
