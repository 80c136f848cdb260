//! The key a deployment's spot replicas require of every request (vLLM's `--api-key`,
//! through `VLLM_API_KEY`). A replica's port is open to the internet, so only the router
//! may hold it. It must outlive the process (a resumed run adopts replicas launched with
//! it), so it lives in `$TANDEMN_HOME/keys/<service>.replica-key`, readable by its owner
//! only, and `destroy` removes it with the last replica.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tandemn_config::api::Secret;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path} is readable by others (mode {mode:o}); remove it or `chmod 600` it")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path} does not hold a key; remove it and a new one is made")]
    Malformed { path: PathBuf },
}

fn path(home: &Path, service: &str) -> PathBuf {
    home.join("keys").join(format!("{service}.replica-key"))
}

/// The service's replica key: the one kept, or a new one written (0600) if none is.
pub fn load_or_create(home: &Path, service: &str) -> Result<Secret, KeyError> {
    let path = path(home, service);
    let io = |error| KeyError::Io { path: path.clone(), error };
    let dir = home.join("keys");
    DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|error| KeyError::Io { path: dir, error })?;
    let fresh = Secret::new(format!("tdn-replica-{:032x}", rand::random::<u128>()));
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
        Ok(mut file) => {
            file.write_all(fresh.expose().as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
            Ok(fresh)
        }
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            let mut file = OpenOptions::new().read(true).open(&path).map_err(io)?;
            let mode = file.metadata().map_err(io)?.mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Exposed { path, mode });
            }
            let mut text = String::new();
            Read::by_ref(&mut file).take(4096).read_to_string(&mut text).map_err(io)?;
            Secret::parse(text.trim().to_string()).map_err(|_| KeyError::Malformed { path })
        }
        Err(error) => Err(io(error)),
    }
}

/// Forgets the service's replica key (nothing is left that uses it).
pub fn remove(home: &Path, service: &str) -> Result<(), KeyError> {
    let path = path(home, service);
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != ErrorKind::NotFound => Err(KeyError::Io { path, error }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_is_made_once_kept_private_and_reused_until_removed() {
        let home = tempfile::tempdir().unwrap();
        let first = load_or_create(home.path(), "svc").unwrap();
        let file = path(home.path(), "svc");
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(home.path().join("keys")).unwrap().mode() & 0o777, 0o700);
        assert_eq!(load_or_create(home.path(), "svc").unwrap(), first, "a resumed run gets the same key");
        assert_ne!(load_or_create(home.path(), "other").unwrap(), first);
        remove(home.path(), "svc").unwrap();
        remove(home.path(), "svc").unwrap();
        assert_ne!(load_or_create(home.path(), "svc").unwrap(), first);
    }

    #[test]
    fn a_key_file_others_can_read_or_an_empty_one_is_refused() {
        let home = tempfile::tempdir().unwrap();
        load_or_create(home.path(), "svc").unwrap();
        let file = path(home.path(), "svc");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_or_create(home.path(), "svc").unwrap_err();
        assert!(error.to_string().contains("readable by others"), "{error}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&file, "  \n").unwrap();
        assert!(matches!(load_or_create(home.path(), "svc"), Err(KeyError::Malformed { .. })));
    }
}
