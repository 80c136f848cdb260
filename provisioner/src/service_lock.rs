//! One deploy per service: an exclusive `flock` on `$TANDEMN_HOME/locks/<service>.lock`,
//! taken before the deploy writes anything and held for the life of its process. The
//! kernel releases it when the process ends, however it ends; nothing else here may
//! decide that a deploy is running.

use std::fs::{DirBuilder, File, OpenOptions, Permissions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "`{service}` is already being deployed by {}; stop it with `tandemn destroy --service-name {service}`{}",
        holder(*pid),
        pid.map(|p| format!(" (or `kill {p}`)")).unwrap_or_default()
    )]
    Held { service: String, pid: Option<u32> },
    // The cause is in the message, not a `#[source]`, so a chain does not print it twice.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("cannot lock `{0}`: {1}")]
    BadName(String, String),
}

/// The pid the holder wrote. It writes it just after taking the lock, so a deploy that
/// started at the same moment waits a little for it; after that the holder goes unnamed.
fn holder_pid(file: &mut File) -> Option<u32> {
    for _ in 0..50 {
        let mut text = String::new();
        let read = file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut text));
        if let Some(pid) = read.ok().and_then(|_| text.trim().parse().ok()) {
            return Some(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or_else(|| "another process".to_string(), |pid| format!("another process (pid {pid})"))
}

/// Held while the deploy of one service runs; dropping it (or the process dying) frees it.
#[derive(Debug)]
pub struct ServiceLock {
    // Never read: the open description holds the lock. It is close-on-exec, so replicas
    // spawned by the deploy do not inherit it and keep it after the deploy dies.
    _file: File,
    path: PathBuf,
}

impl ServiceLock {
    /// Takes `service`'s lock under `home` (the state directory), or says who holds it.
    pub fn acquire(home: &Path, service: &str) -> Result<ServiceLock, LockError> {
        tandemn_config::check_service_name(service)
            .map_err(|problem| LockError::BadName(service.to_string(), problem))?;
        let io = |path: &Path, error| LockError::Io { path: path.to_path_buf(), error };
        let dir = home.join("locks");
        DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| io(&dir, e))?;
        std::fs::set_permissions(&dir, Permissions::from_mode(0o700)).map_err(|e| io(&dir, e))?;
        let path = dir.join(format!("{service}.lock"));
        // Not truncated on open: until the lock is ours the file holds the holder's pid.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        // A file left by someone else with a looser mode is tightened like the state file.
        file.set_permissions(Permissions::from_mode(0o600)).map_err(|e| io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held { service: service.to_string(), pid: holder_pid(&mut file) });
            }
            Err(TryLockError::Error(error)) => return Err(io(&path, error)),
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(|e| io(&path, e))?;
        Ok(ServiceLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_service_is_refused_until_the_first_is_dropped() {
        let home = tempfile::tempdir().unwrap();
        let first = ServiceLock::acquire(home.path(), "svc").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home.path().join("locks")), 0o700);
        assert_eq!(mode(first.path()), 0o600);
        // flock locks belong to the open file, so a second open in this process conflicts too.
        let refused = ServiceLock::acquire(home.path(), "svc").unwrap_err();
        let pid = std::process::id();
        assert!(matches!(refused, LockError::Held { pid: Some(p), .. } if p == pid), "{refused:?}");
        assert_eq!(
            refused.to_string(),
            format!(
                "`svc` is already being deployed by another process (pid {pid}); stop it with \
                 `tandemn destroy --service-name svc` (or `kill {pid}`)"
            )
        );
        let other = ServiceLock::acquire(home.path(), "other").unwrap();
        drop(first);
        ServiceLock::acquire(home.path(), "svc").unwrap();
        drop(other);
    }

    #[test]
    fn a_name_that_is_not_a_service_name_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let error = ServiceLock::acquire(home.path(), "../escape").unwrap_err();
        assert!(matches!(error, LockError::BadName(..)), "{error:?}");
        assert!(!home.path().join("escape.lock").exists());
    }
}
