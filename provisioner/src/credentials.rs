//! Which provider credentials and command-line tools this machine has. Reports
//! variable names and file paths only, never a secret's value.

use std::path::{Path, PathBuf};

use tandemn_config::{ServerlessProvider, SpotCloud};

/// Reads an environment variable.
type VarLookup = dyn Fn(&str) -> Option<String>;

/// What the probes may look at: environment variables, the home directory and `PATH`.
pub struct Environment {
    vars: Box<VarLookup>,
    home: Option<PathBuf>,
    path: Vec<PathBuf>,
}

impl Environment {
    pub fn current() -> Self {
        Self {
            vars: Box::new(|name| std::env::var(name).ok()),
            home: std::env::var_os("HOME").map(PathBuf::from),
            path: std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default(),
        }
    }

    pub fn new(vars: impl Fn(&str) -> Option<String> + 'static, home: Option<PathBuf>, path: Vec<PathBuf>) -> Self {
        Self { vars: Box::new(vars), home, path }
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.vars)(name).filter(|v| !v.trim().is_empty())
    }

    fn home_file(&self, relative: &str) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join(relative)).filter(|p| p.is_file())
    }

    fn command(&self, name: &str) -> Option<PathBuf> {
        self.path.iter().map(|dir| dir.join(name)).find(|p| is_executable(p))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The credential sets Tandemn can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    Modal,
    Runpod,
    /// Google Cloud, for Cloud Run.
    Gcp,
    /// SkyPilot, for spot instances on any cloud.
    Skypilot,
    /// This machine; needs nothing.
    Local,
}

impl Account {
    pub const ALL: [Account; 5] = [Self::Modal, Self::Runpod, Self::Gcp, Self::Skypilot, Self::Local];

    pub fn name(self) -> &'static str {
        match self {
            Self::Modal => "modal",
            Self::Runpod => "runpod",
            Self::Gcp => "gcp",
            Self::Skypilot => "skypilot",
            Self::Local => "local",
        }
    }

    pub fn for_serverless(provider: ServerlessProvider) -> Self {
        match provider {
            ServerlessProvider::Modal => Self::Modal,
            ServerlessProvider::Runpod => Self::Runpod,
            ServerlessProvider::Cloudrun => Self::Gcp,
            ServerlessProvider::Local => Self::Local,
        }
    }

    pub fn for_spot(cloud: SpotCloud) -> Self {
        match cloud {
            SpotCloud::Local => Self::Local,
            SpotCloud::Aws | SpotCloud::Gcp | SpotCloud::Azure => Self::Skypilot,
        }
    }
}

/// What was found for one account, and what is missing with how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialStatus {
    pub account: Account,
    pub ready: bool,
    pub found: Vec<String>,
    pub missing: Vec<String>,
}

pub fn probe(account: Account, env: &Environment) -> CredentialStatus {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let ready = match account {
        Account::Runpod => {
            let key = env.var("RUNPOD_API_KEY").is_some();
            note(key, "RUNPOD_API_KEY is set", "set RUNPOD_API_KEY to a RunPod API key", &mut found, &mut missing);
            key
        }
        Account::Modal => {
            let token = if env.var("MODAL_TOKEN_ID").is_some() && env.var("MODAL_TOKEN_SECRET").is_some() {
                Some("MODAL_TOKEN_ID and MODAL_TOKEN_SECRET are set".to_string())
            } else {
                env.home_file(".modal.toml").map(|p| format!("token file {}", p.display()))
            };
            let cli = env.command("modal");
            note_found(
                &token,
                "run `modal token new` or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET",
                &mut found,
                &mut missing,
            );
            note_found(
                &cli.map(|p| format!("`modal` CLI at {}", p.display())),
                "install the CLI: `pip install modal`",
                &mut found,
                &mut missing,
            );
            found.len() == 2
        }
        Account::Gcp => {
            let explicit = env.var("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from).filter(|p| p.is_file());
            let credentials = explicit
                .map(|p| format!("GOOGLE_APPLICATION_CREDENTIALS file {}", p.display()))
                .or_else(|| {
                    env.home_file(".config/gcloud/application_default_credentials.json")
                        .map(|p| format!("application default credentials {}", p.display()))
                })
                .or_else(|| env.command("gcloud").map(|p| format!("`gcloud` CLI at {}", p.display())));
            note_found(&credentials, "run `gcloud auth application-default login`", &mut found, &mut missing);
            credentials.is_some()
        }
        Account::Skypilot => {
            let endpoint =
                env.var("SKYPILOT_API_SERVER_ENDPOINT").map(|_| "SKYPILOT_API_SERVER_ENDPOINT is set".to_string());
            let sky = endpoint.or_else(|| env.command("sky").map(|p| format!("`sky` CLI at {}", p.display())));
            note_found(
                &sky,
                "install SkyPilot (`pip install \"skypilot[aws]\"`) and run `sky api start`, or set \
                 SKYPILOT_API_SERVER_ENDPOINT to your team's API server",
                &mut found,
                &mut missing,
            );
            sky.is_some()
        }
        Account::Local => {
            found.push("built in: replicas run as local processes".to_string());
            true
        }
    };
    CredentialStatus { account, ready, found, missing }
}

fn note(present: bool, yes: &str, fix: &str, found: &mut Vec<String>, missing: &mut Vec<String>) {
    if present { found.push(yes.to_string()) } else { missing.push(fix.to_string()) }
}

fn note_found(what: &Option<String>, fix: &str, found: &mut Vec<String>, missing: &mut Vec<String>) {
    match what {
        Some(text) => found.push(text.clone()),
        None => missing.push(fix.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    fn environment(vars: &[(&str, &str)], home: &Path, path: Vec<PathBuf>) -> Environment {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Environment::new(move |name| vars.get(name).cloned(), Some(home.to_path_buf()), path)
    }

    fn install(dir: &Path, name: &str) {
        let file = dir.join(name);
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn nothing_configured_means_nothing_ready_but_local() {
        let home = tempfile::tempdir().unwrap();
        let env = environment(&[("RUNPOD_API_KEY", "  ")], home.path(), vec![]);
        for account in Account::ALL {
            let status = probe(account, &env);
            assert_eq!(status.ready, account == Account::Local, "{account:?}: {status:?}");
            if account != Account::Local {
                assert!(!status.missing.is_empty(), "{account:?} should say how to fix it");
            }
        }
    }

    #[test]
    fn present_credentials_are_found_and_secrets_never_echoed() {
        let home = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".modal.toml"), "[default]\ntoken_id = \"ak-SECRET\"\n").unwrap();
        std::fs::create_dir_all(home.path().join(".config/gcloud")).unwrap();
        std::fs::write(home.path().join(".config/gcloud/application_default_credentials.json"), "{}").unwrap();
        install(bin.path(), "modal");
        install(bin.path(), "sky");
        std::fs::write(bin.path().join("gcloud"), "not executable").unwrap();
        let env = environment(&[("RUNPOD_API_KEY", "rp-SECRET")], home.path(), vec![bin.path().to_path_buf()]);
        for account in Account::ALL {
            let status = probe(account, &env);
            assert!(status.ready, "{account:?}: {status:?}");
            let text = format!("{status:?}");
            assert!(!text.contains("SECRET"), "{account:?} leaked a secret: {text}");
        }
        assert!(probe(Account::Gcp, &env).found[0].contains("application default credentials"));
    }

    #[test]
    fn modal_needs_both_a_token_and_the_cli() {
        let home = tempfile::tempdir().unwrap();
        let env = environment(&[("MODAL_TOKEN_ID", "ak-1"), ("MODAL_TOKEN_SECRET", "as-1")], home.path(), vec![]);
        let status = probe(Account::Modal, &env);
        assert!(!status.ready);
        assert_eq!(status.missing, ["install the CLI: `pip install modal`"]);
    }
}
