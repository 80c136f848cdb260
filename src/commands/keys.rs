//! Client and admin keys from flags, key files and the environment, checked where they
//! enter: a key that is empty or only whitespace is refused with its source named (the
//! flag, the variable, the file), and no message ever holds a key's value.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tandemn_config::api::Secret;
use tandemn_config::spec::read_secret_file;

use super::UsageError;
use crate::cli::KeyArgs;

/// One client key, for when several would be unwieldy in a variable.
pub const API_KEY_ENV: &str = "TANDEMN_API_KEY";
pub const ADMIN_KEY_ENV: &str = "TANDEMN_ADMIN_KEY";

/// The keys the command line and environment gave, and what to warn about.
#[derive(Debug, Default)]
pub struct Keys {
    /// From `--api-key` and `--api-key-file`, else from `TANDEMN_API_KEY`.
    pub client: Vec<Secret>,
    /// From `--admin-key` or `--admin-key-file`, else from `TANDEMN_ADMIN_KEY`.
    pub admin: Option<Secret>,
    /// Key files others can read: worth saying, not worth refusing.
    pub warnings: Vec<String>,
}

impl Keys {
    /// Reads the process environment; prints the warnings on stderr.
    pub fn from_args(args: &KeyArgs) -> Result<Keys, UsageError> {
        let keys = Self::read(args, |name| std::env::var_os(name))?;
        for warning in &keys.warnings {
            crate::output::eprintln(&format!("warning: {warning}"));
        }
        Ok(keys)
    }

    /// `env` looks up a variable, so tests need not touch the process environment.
    pub fn read(args: &KeyArgs, env: impl Fn(&str) -> Option<OsString>) -> Result<Keys, UsageError> {
        let mut keys = Keys::default();
        for key in &args.api_keys {
            keys.client.push(flag_key("--api-key", key)?);
        }
        for path in &args.api_key_files {
            let (found, warning) = file_keys("--api-key-file", path)?;
            keys.client.extend(found);
            keys.warnings.extend(warning);
        }
        // Checked even when flags win: an exported empty key is a mistake worth stopping on.
        let env_client = env_key(API_KEY_ENV, env(API_KEY_ENV))?;
        if keys.client.is_empty() {
            keys.client.extend(env_client);
        }

        let env_admin = env_key(ADMIN_KEY_ENV, env(ADMIN_KEY_ENV))?;
        keys.admin = match (&args.admin_key, &args.admin_key_file) {
            (Some(key), _) => Some(flag_key("--admin-key", key)?),
            (None, Some(path)) => {
                let (mut found, warning) = file_keys("--admin-key-file", path)?;
                keys.warnings.extend(warning);
                if found.len() > 1 {
                    return Err(UsageError(format!(
                        "--admin-key-file {} holds {} keys; it takes one",
                        path.display(),
                        found.len()
                    )));
                }
                found.pop()
            }
            (None, None) => env_admin,
        };
        Ok(keys)
    }
}

/// Surrounding whitespace is dropped (an HTTP header loses it too); nothing else may be.
fn flag_key(flag: &str, value: &str) -> Result<Secret, UsageError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(UsageError(format!(
            "{flag} is empty (or only whitespace); an empty key is never accepted. Check the variable it came from"
        )));
    }
    printable(flag, value)
}

/// A key a client can send: printable ASCII (an HTTP header carries nothing else that
/// the router can compare), so a pasted line break or control character is caught here.
fn printable(source: &str, value: &str) -> Result<Secret, UsageError> {
    if value.contains(['\n', '\r']) {
        return Err(UsageError(format!(
            "{source} holds more than one line; it takes one key (put several in a file given with --api-key-file)"
        )));
    }
    if !value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err(UsageError(format!(
            "{source} holds a character that is not printable ASCII (a control character, a tab or a \
             non-ASCII letter), which no HTTP header can carry"
        )));
    }
    Ok(Secret::new(value))
}

fn env_key(name: &str, value: Option<OsString>) -> Result<Option<Secret>, UsageError> {
    let Some(value) = value else { return Ok(None) };
    let Some(value) = value.to_str() else {
        return Err(UsageError(format!("{name} is not valid UTF-8")));
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(UsageError(format!("{name} is set but empty; set it to a key, or unset it")));
    }
    printable(name, value).map(Some)
}

/// The keys in a file (one a line, `#` comments and blank lines skipped), and a warning if
/// others may read it.
fn file_keys(flag: &str, path: &Path) -> Result<(Vec<Secret>, Option<String>), UsageError> {
    let metadata =
        std::fs::metadata(path).map_err(|e| UsageError(format!("cannot read {flag} {}: {e}", path.display())))?;
    let text = read_secret_file(path).map_err(|problem| UsageError(format!("{flag}: {problem}")))?;
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') {
            keys.push(printable(&format!("{flag} {} line {}", path.display(), index + 1), line)?);
        }
    }
    if keys.is_empty() {
        return Err(UsageError(format!("{flag} {} holds no key (only blank lines and # comments)", path.display())));
    }
    let mode = metadata.permissions().mode() & 0o777;
    let warning = (mode & 0o077 != 0).then(|| {
        format!("{flag} {} can be read or written by group or others (mode {mode:04o}); `chmod 600` it", path.display())
    });
    Ok((keys, warning))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::path::PathBuf;

    use super::*;

    fn exposed(keys: &[Secret]) -> Vec<&str> {
        keys.iter().map(Secret::expose).collect()
    }

    fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn keys_come_from_flags_files_and_the_environment_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let listed = file(dir.path(), "keys", "# rotated monthly\nk-one\n\n  k-two  \n#k-old\n", 0o600);
        let admin = file(dir.path(), "admin", "\n# admin\nadm-file\n", 0o600);
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| OsString::from(v))
        };
        let none = env(&[]);

        let args = KeyArgs {
            api_keys: vec![" k-flag ".into()],
            api_key_files: vec![listed.clone()],
            admin_key_file: Some(admin.clone()),
            ..KeyArgs::default()
        };
        let keys = Keys::read(&args, env(&[(API_KEY_ENV, "k-env"), (ADMIN_KEY_ENV, "adm-env")])).unwrap();
        assert_eq!(exposed(&keys.client), ["k-flag", "k-one", "k-two"], "flags and files win over the variable");
        assert_eq!(keys.admin.unwrap().expose(), "adm-file");
        assert!(keys.warnings.is_empty(), "{:?}", keys.warnings);

        let keys = Keys::read(&KeyArgs::default(), env(&[(API_KEY_ENV, " k-env\n"), (ADMIN_KEY_ENV, "adm-env")]));
        let keys = keys.unwrap();
        assert_eq!((exposed(&keys.client), keys.admin.unwrap().expose()), (vec!["k-env"], "adm-env"));

        let args = KeyArgs { admin_key: Some("adm-flag".into()), ..KeyArgs::default() };
        let keys = Keys::read(&args, env(&[(ADMIN_KEY_ENV, "adm-env")])).unwrap();
        assert_eq!((keys.client.len(), keys.admin.unwrap().expose()), (0, "adm-flag"));
        let keys = Keys::read(&KeyArgs::default(), none).unwrap();
        assert!(keys.client.is_empty() && keys.admin.is_none());
    }

    #[test]
    fn an_endless_key_file_is_refused_not_read_forever() {
        let error = file_keys("--api-key-file", Path::new("/dev/zero")).unwrap_err().0;
        assert!(error.starts_with("--api-key-file: secret file /dev/zero is larger than 64 KiB"), "{error}");
    }

    #[test]
    fn an_empty_key_from_any_source_is_refused_naming_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let blank = file(dir.path(), "blank", "\n  \n# only a comment\n", 0o600);
        let two = file(dir.path(), "two", "a\nb\n", 0o600);
        let control = file(dir.path(), "control", "fine\nbell\u{7}key\n", 0o600);
        let missing = dir.path().join("missing");
        let empty_env = |name: &'static str| move |n: &str| (n == name).then(|| OsString::from(" "));
        let no_env = |_: &str| None;
        type Env = Box<dyn Fn(&str) -> Option<OsString>>;
        let cases: Vec<(KeyArgs, Env, String)> = vec![
            (
                KeyArgs { api_keys: vec![String::new()], ..KeyArgs::default() },
                Box::new(no_env),
                "--api-key is empty".into(),
            ),
            (
                KeyArgs { api_keys: vec!["ok".into(), " \t".into()], ..KeyArgs::default() },
                Box::new(no_env),
                "--api-key is empty".into(),
            ),
            (
                KeyArgs { admin_key: Some(String::new()), ..KeyArgs::default() },
                Box::new(no_env),
                "--admin-key is empty".into(),
            ),
            (KeyArgs::default(), Box::new(empty_env(API_KEY_ENV)), "TANDEMN_API_KEY is set but empty".into()),
            (KeyArgs::default(), Box::new(empty_env(ADMIN_KEY_ENV)), "TANDEMN_ADMIN_KEY is set but empty".into()),
            (
                // An empty variable is refused even when a flag would win over it.
                KeyArgs { api_keys: vec!["ok".into()], ..KeyArgs::default() },
                Box::new(empty_env(API_KEY_ENV)),
                "TANDEMN_API_KEY is set but empty".into(),
            ),
            (
                KeyArgs::default(),
                Box::new(|n: &str| (n == API_KEY_ENV).then(|| OsString::from("a\nb"))),
                "TANDEMN_API_KEY holds more than one line".into(),
            ),
            (
                KeyArgs { api_key_files: vec![blank.clone()], ..KeyArgs::default() },
                Box::new(no_env),
                format!("--api-key-file {} holds no key", blank.display()),
            ),
            (
                KeyArgs { admin_key_file: Some(blank.clone()), ..KeyArgs::default() },
                Box::new(no_env),
                format!("--admin-key-file {} holds no key", blank.display()),
            ),
            (
                KeyArgs { admin_key_file: Some(two.clone()), ..KeyArgs::default() },
                Box::new(no_env),
                format!("--admin-key-file {} holds 2 keys; it takes one", two.display()),
            ),
            (
                KeyArgs { api_keys: vec!["line\nbreak".into()], ..KeyArgs::default() },
                Box::new(no_env),
                "--api-key holds more than one line".into(),
            ),
            (
                KeyArgs { admin_key: Some("caf\u{e9}".into()), ..KeyArgs::default() },
                Box::new(no_env),
                "--admin-key holds a character that is not printable ASCII".into(),
            ),
            (
                KeyArgs { api_key_files: vec![control.clone()], ..KeyArgs::default() },
                Box::new(no_env),
                format!("--api-key-file {} line 2 holds a character that is not printable ASCII", control.display()),
            ),
            (
                KeyArgs { api_key_files: vec![missing.clone()], ..KeyArgs::default() },
                Box::new(no_env),
                format!("cannot read --api-key-file {}", missing.display()),
            ),
        ];
        for (args, env, expected) in cases {
            let error = Keys::read(&args, env).unwrap_err().0;
            assert!(error.starts_with(&expected), "{args:?}: {error}");
        }
    }

    #[test]
    fn a_key_file_others_can_read_is_warned_about_but_used() {
        let dir = tempfile::tempdir().unwrap();
        let loose = file(dir.path(), "loose", "k-secret\n", 0o644);
        let args = KeyArgs { api_key_files: vec![loose.clone()], ..KeyArgs::default() };
        let keys = Keys::read(&args, |_| None).unwrap();
        assert_eq!(exposed(&keys.client), ["k-secret"]);
        assert_eq!(
            keys.warnings,
            [format!(
                "--api-key-file {} can be read or written by group or others (mode 0644); `chmod 600` it",
                loose.display()
            )]
        );
        assert!(!keys.warnings[0].contains("k-secret"));
    }
}
