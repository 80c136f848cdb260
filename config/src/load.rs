//! Layering: defaults ← deployment file ← scaling-policy file ← command-line flags.
//! Files and flags merge as YAML trees, then deserialize and validate once, so every
//! violation is reported together and points at the file, line or flag that set it.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use crate::catalog::Catalog;
use crate::document::Document;
use crate::error::{ConfigError, Location, Violation};
use crate::raw::RawDeployment;
use crate::spec::DeploymentSpec;
use crate::validate::validate;

/// Everything a deployment's configuration may come from.
#[derive(Debug, Default)]
pub struct Sources {
    /// A deployment file (`tandemn.yaml`).
    pub deployment_file: Option<PathBuf>,
    /// A scaling-policy file with `spot:` and `serverless:` sections; it overrides the
    /// deployment file's `scaling:` section.
    pub scaling_policy_file: Option<PathBuf>,
    /// Command-line flags; they win over both files.
    pub overrides: Vec<Override>,
}

/// One command-line flag's value, placed at a key path of the deployment file.
#[derive(Debug, Clone)]
pub struct Override {
    pub path: &'static str,
    pub flag: &'static str,
    value: Value,
}

impl Override {
    pub fn text(path: &'static str, flag: &'static str, value: &str) -> Self {
        Self { path, flag, value: Value::from(value) }
    }

    pub fn int(path: &'static str, flag: &'static str, value: i64) -> Self {
        Self { path, flag, value: Value::Number(value.into()) }
    }

    pub fn boolean(path: &'static str, flag: &'static str, value: bool) -> Self {
        Self { path, flag, value: Value::Bool(value) }
    }
}

impl Sources {
    pub fn is_empty(&self) -> bool {
        self.deployment_file.is_none() && self.scaling_policy_file.is_none() && self.overrides.is_empty()
    }

    /// Reads, merges and validates. On error, lists every violation found.
    pub fn load(&self, catalog: &Catalog) -> Result<DeploymentSpec, ConfigError> {
        let mut violations = Vec::new();
        let mut documents = Vec::new();
        let files = [(&self.deployment_file, ""), (&self.scaling_policy_file, "scaling")];
        for (path, mount) in files {
            let Some(path) = path else { continue };
            match Document::read(path, mount) {
                Ok(document) => documents.push(document),
                Err(violation) => violations.push(violation),
            }
        }
        self.merge(documents, violations, catalog)
    }

    /// A spec as the state store keeps it (its JSON uses the YAML's keys), validated
    /// again, so commands that act on a deployment from outside see what it runs with.
    pub fn stored(text: &str, catalog: &Catalog) -> Result<DeploymentSpec, ConfigError> {
        let path = std::path::Path::new("(the stored deployment)");
        match Document::parse(text, path, "") {
            Ok(document) => Sources::default().merge(vec![document], Vec::new(), catalog),
            Err(violation) => Err(ConfigError { violations: vec![violation] }),
        }
    }

    fn merge(
        &self,
        documents: Vec<Document>,
        mut violations: Vec<Violation>,
        catalog: &Catalog,
    ) -> Result<DeploymentSpec, ConfigError> {
        let mut merged = Mapping::new();
        for document in &documents {
            let mut mounted = document.value.clone();
            if !document.mount.is_empty() {
                mounted = Value::Mapping(Mapping::from_iter([(Value::from(document.mount), mounted)]));
            }
            if let Value::Mapping(mapping) = mounted {
                overlay(&mut merged, mapping);
            }
        }
        let mut flags = HashMap::new();
        for o in &self.overrides {
            set_path(&mut merged, o.path, o.value.clone());
            flags.insert(o.path, o.flag);
        }

        let origins = Origins { documents, flags };
        let spec = deserialize_all::<RawDeployment>(Value::Mapping(merged), &origins, &mut violations)
            .map(|raw| validate(raw, &origins, catalog, &mut violations));
        violations.sort_by(|a, b| a.location.sort_key().cmp(&b.location.sort_key()));
        match spec {
            Some(spec) if violations.is_empty() => Ok(spec),
            _ => Err(ConfigError { violations }),
        }
    }
}

/// Maps a merged key path back to the file position or flag that set it.
pub(crate) struct Origins {
    documents: Vec<Document>,
    flags: HashMap<&'static str, &'static str>,
}

impl Origins {
    pub(crate) fn violation(&self, path: &str, message: impl Into<String>) -> Violation {
        if let Some(flag) = self.flags.get(path) {
            return Violation::new(Location::Flag(flag), path, message);
        }
        let in_document = |document: &Document| {
            let mount = document.mount;
            if mount.is_empty() {
                Some(path)
            } else {
                path.strip_prefix(mount).and_then(|rest| rest.strip_prefix('.').or(rest.is_empty().then_some("")))
            }
        };
        // The last layer that sets the key itself, else the last file it could live in.
        let setter = self.documents.iter().rev().find_map(|d| in_document(d).filter(|p| d.sets(p)).map(|p| (d, p)));
        let fallback = || self.documents.iter().rev().find_map(|d| in_document(d).map(|p| (d, p)));
        match setter.or_else(fallback) {
            Some((document, relative)) => Violation::new(document.locate(relative), relative, message),
            None => Violation::new(Location::Default, path, message),
        }
    }
}

/// Deserializes `value`, and on each error records it, drops the offending key and
/// tries again, so one bad key does not hide the others.
fn deserialize_all<T: DeserializeOwned>(mut value: Value, origins: &Origins, out: &mut Vec<Violation>) -> Option<T> {
    const MAX_ERRORS: usize = 64;
    for _ in 0..MAX_ERRORS {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return Some(parsed),
            Err(error) => error,
        };
        let mut path = error.path().to_string();
        if path == "." {
            path.clear();
        }
        let message = error.inner().to_string();
        let violation = match secret_scope(&path) {
            // An unknown key under a secret is reported at the secret: the key may be the secret.
            Some(scope) if unknown_key(&message).is_some() => origins.violation(scope, describe_secret(&message)),
            Some(_) => origins.violation(&path, describe_secret(&message)),
            None => origins.violation(&path, describe(&message)),
        };
        out.push(violation);
        if path.is_empty() || !remove_path(&mut value, &path) {
            return None;
        }
    }
    None
}

/// Keys whose values are secret references: whatever is written there may be the secret.
const SECRET_KEYS: &[&str] = &["api_keys", "admin_key", "bearer", "modal_key", "modal_secret", "cloudrun_id_token"];

/// The part of `path` up to a secret key and its list index (`router.api_keys[0]`), if the
/// path goes through one.
fn secret_scope(path: &str) -> Option<&str> {
    let mut start = 0;
    for part in path.split('.') {
        let end = start + part.len();
        let key = part.split('[').next().unwrap_or(part);
        if SECRET_KEYS.contains(&key) {
            return Some(&path[..end]);
        }
        start = end + 1;
    }
    None
}

const SECRET_FORM: &str = "a secret is read from `{env: VARIABLE}` or `{file: PATH}`, never written inline";

/// Describes a problem at or under a secret key without repeating anything written there.
fn describe_secret(message: &str) -> String {
    if unknown_key(message).is_some() {
        return format!("has an unknown key (not shown, in case it is the secret itself); {SECRET_FORM}");
    }
    match message.strip_prefix("invalid type: ").and_then(|rest| rest.split_once(", expected ")) {
        Some((_, "struct RawSecret")) => {
            format!("expected a mapping with `env:` or `file:`; {SECRET_FORM} (the value is not shown)")
        }
        Some((_, "a sequence")) => {
            format!("expected a list of secret references; {SECRET_FORM} (the value is not shown)")
        }
        Some((_, expected)) => format!("expected {} (the value is not shown)", expected_noun(expected)),
        None => format!("is not a valid secret reference (the value is not shown); {SECRET_FORM}"),
    }
}

fn unknown_key(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// Rewrites serde's messages in the words of a configuration file.
fn describe(message: &str) -> String {
    if let Some(key) = unknown_key(message) {
        let valid: Vec<&str> = message.split('`').skip(3).step_by(2).collect();
        return match crate::closest(key, valid.iter().copied()) {
            Some(best) => format!("unknown key; did you mean `{best}`?"),
            None if valid.is_empty() => "unknown key; this section takes no keys".to_string(),
            None => format!("unknown key; valid keys: {}", valid.join(", ")),
        };
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let noun = expected_noun(expected);
        // Text written where a section or list goes is often a URL with credentials or a
        // key; a word where a number goes (`ten`, `yes`) is worth showing.
        let section = expected == "a sequence" || expected.starts_with("struct ");
        return match found.strip_prefix("string ") {
            Some(text) if section || !plain_word(text) => format!("expected {noun}, found a string (not shown)"),
            _ => format!("expected {noun}, found {found}"),
        };
    }
    message.to_string()
}

/// A short word (`"ten"`, `"yes"`) is worth echoing; anything else, such as a token pasted
/// into the wrong key, is not shown.
fn plain_word(quoted: &str) -> bool {
    let word = quoted.trim_matches('"');
    !word.is_empty() && word.len() <= 12 && word.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
}

/// Serde's name for an expected type, in the words of a configuration file.
fn expected_noun(expected: &str) -> &str {
    match expected {
        "i64" => "a whole number",
        "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "a list",
        other if other.starts_with("struct ") => "a mapping of keys",
        other => other,
    }
}

fn overlay(target: &mut Mapping, layer: Mapping) {
    for (key, value) in layer {
        match value {
            Value::Null => {}
            Value::Mapping(inner) => {
                let slot = target.entry(key).or_insert_with(|| Value::Mapping(Mapping::new()));
                if !slot.is_mapping() {
                    *slot = Value::Mapping(Mapping::new());
                }
                if let Value::Mapping(existing) = slot {
                    overlay(existing, inner);
                }
            }
            other => {
                target.insert(key, other);
            }
        }
    }
}

fn set_path(target: &mut Mapping, path: &str, value: Value) {
    let (parents, leaf) = path.rsplit_once('.').map_or(("", path), |(p, l)| (p, l));
    let mut layer = Mapping::from_iter([(Value::from(leaf), value)]);
    for parent in parents.rsplit('.').filter(|p| !p.is_empty()) {
        layer = Mapping::from_iter([(Value::from(parent), Value::Mapping(layer))]);
    }
    overlay(target, layer);
}

/// Removes the node at a path such as `router.api_keys[1].env`; false if absent.
fn remove_path(value: &mut Value, path: &str) -> bool {
    let mut steps: Vec<Step> = Vec::new();
    for part in path.split('.') {
        let (key, indexes) = part.split_once('[').map_or((part, ""), |(k, rest)| (k, rest));
        if !key.is_empty() {
            steps.push(Step::Key(key));
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            match index.parse() {
                Ok(i) => steps.push(Step::Index(i)),
                Err(_) => return false,
            }
        }
    }
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut node = value;
    for step in parents {
        let next = match step {
            Step::Key(key) => node.get_mut(*key),
            Step::Index(i) => node.get_mut(*i),
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (last, node) {
        (Step::Key(key), Value::Mapping(map)) => map.remove(*key).is_some(),
        (Step::Index(i), Value::Sequence(seq)) if *i < seq.len() => {
            seq.remove(*i);
            true
        }
        _ => false,
    }
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ScalingPolicy, ServerlessProvider, SpotCloud};
    use std::io::Write;
    use std::time::Duration;

    struct Files {
        _dir: tempfile::TempDir,
        deployment: PathBuf,
        scaling: PathBuf,
    }

    fn files(deployment: &str, scaling: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
            path
        };
        let deployment = write("tandemn.yaml", deployment);
        let scaling = write("policy.yaml", scaling);
        Files { _dir: dir, deployment, scaling }
    }

    fn load(deployment: &str, overrides: Vec<Override>) -> Result<DeploymentSpec, Vec<String>> {
        let files = files(deployment, "");
        let sources = Sources { deployment_file: Some(files.deployment.clone()), scaling_policy_file: None, overrides };
        sources.load(Catalog::embedded()).map_err(|e| {
            e.violations.iter().map(|v| v.to_string().replace(&*files.deployment.to_string_lossy(), "F")).collect()
        })
    }

    fn errors(deployment: &str) -> Vec<String> {
        load(deployment, Vec::new()).expect_err("the configuration should be rejected")
    }

    const BASE: &str = "model: Qwen/Qwen3-0.6B\ngpu: L4\n";

    #[test]
    fn a_stored_spec_reloads_as_the_same_spec() {
        let spec = load(
            "service_name: svc\nmodel: m\ngpu: L4\nregion: us-east-2\nlocal: {spot_boot_secs: 1.5, cold_start_secs: 3, \
             command: 'vllm serve {model} --port {port}'}\nscaling: {spot: {min_replicas: 1, max_replicas: 4}}\n\
             router: {spot_capacity: 8, idle_timeout: 12.5}\n",
            vec![],
        )
        .unwrap();
        let stored = serde_json::to_string(&spec).unwrap();
        let again = Sources::stored(&stored, Catalog::embedded()).unwrap();
        assert_eq!(
            DeploymentSpec { service_name_generated: false, serverless_provider_auto: false, ..again },
            DeploymentSpec { service_name_generated: false, serverless_provider_auto: false, ..spec }
        );
    }

    #[test]
    fn defaults_match_the_seed_readme() {
        let spec = load(BASE, Vec::new()).unwrap();
        assert_eq!(spec.scaling, ScalingPolicy::default());
        let spot = &spec.scaling.spot;
        assert_eq!((spot.min_replicas, spot.max_replicas, spot.target_qps), (0, 8, 10.0));
        assert_eq!((spot.upscale_delay, spot.downscale_delay), (5, 300));
        let svl = &spec.scaling.serverless;
        assert_eq!((svl.concurrency, svl.scaledown_window, svl.timeout), (32, 60, 600));
        assert_eq!((svl.workers_min, svl.workers_max, svl.scaler_value), (0, 1, 4));
        assert_eq!((spec.gpu_count, spec.tp_size, spec.max_model_len), (1, 1, 4096));
        assert_eq!(spec.spots_cloud, SpotCloud::Aws);
        assert_eq!((spec.serverless_provider, spec.serverless_provider_auto), (ServerlessProvider::Runpod, true));
        assert!(spec.scale_to_zero && !spec.public);
        assert_eq!(spec.router.first_byte_timeout, std::time::Duration::from_secs(600));
        assert!(crate::check_service_name(&spec.service_name).is_ok());
        assert!(spec.service_name.starts_with("tandemn-") && spec.service_name.len() == 16);
    }

    #[test]
    fn precedence_is_defaults_then_file_then_scaling_file_then_flags() {
        let files = files(
            "model: m\ngpu: a100\nscaling:\n  spot: {target_qps: 3, max_replicas: 4}\n  serverless: {concurrency: 8, timeout: 30}\n",
            "serverless:\n  concurrency: 16\n",
        );
        let sources = Sources {
            deployment_file: Some(files.deployment.clone()),
            scaling_policy_file: Some(files.scaling.clone()),
            overrides: vec![Override::int("scaling.serverless.timeout", "--timeout", 90)],
        };
        let spec = sources.load(Catalog::embedded()).unwrap();
        assert_eq!(spec.gpu, "A100_80GB");
        assert_eq!(spec.scaling.spot.target_qps, 3.0);
        assert_eq!(spec.scaling.spot.max_replicas, 4);
        assert_eq!(spec.scaling.serverless.concurrency, 16, "scaling file beats the deployment file");
        assert_eq!(spec.scaling.serverless.timeout, 90, "flags beat both files");
        assert_eq!(spec.router.first_byte_timeout, std::time::Duration::from_secs(90));
        assert_eq!(spec.scaling.serverless.workers_max, 1, "untouched keys keep their defaults");
    }

    #[test]
    fn no_scale_to_zero_forces_a_warm_replica_and_a_long_window() {
        let yaml = format!("{BASE}scaling:\n  serverless: {{scaledown_window: 10}}\n  spot: {{min_replicas: 0}}\n");
        let flag = vec![Override::boolean("scale_to_zero", "--no-scale-to-zero", false)];
        let spec = load(&yaml, flag).unwrap();
        assert_eq!(spec.scaling.spot.min_replicas, 1);
        assert_eq!(spec.scaling.serverless.scaledown_window, 300);
        let spec =
            load(&format!("{BASE}scale_to_zero: false\nscaling: {{spot: {{min_replicas: 3}}}}\n"), vec![]).unwrap();
        assert_eq!(spec.scaling.spot.min_replicas, 3, "a larger minimum is kept");
    }

    #[test]
    fn every_violation_is_reported_with_its_location() {
        let cases: &[(&str, &str)] = &[
            (
                "scaling:\n  spot:\n    target_qp: 3\n",
                "F:5:5: `scaling.spot.target_qp`: unknown key; did you mean `target_qps`?",
            ),
            ("modle: x\n", "F:3:1: `modle`: unknown key; did you mean `model`?"),
            (
                "scaling:\n  spot:\n    min_replicas: -1\n",
                "F:5:5: `scaling.spot.min_replicas`: must be between 0 and 100, got -1",
            ),
            (
                "scaling:\n  spot: {min_replicas: 5, max_replicas: 2}\n",
                "`scaling.spot.min_replicas`: must not exceed `spot.max_replicas` (2), got 5",
            ),
            (
                "scaling:\n  spot: {target_qps: 0}\n",
                "`scaling.spot.target_qps`: must be greater than 0 and at most 100000, got 0",
            ),
            ("scaling:\n  spot: {target_qps: -2.5}\n", "must be greater than 0 and at most 100000, got -2.5"),
            (
                "scaling:\n  serverless: {concurrency: 0}\n",
                "`scaling.serverless.concurrency`: must be between 1 and 1024, got 0",
            ),
            (
                "scaling:\n  serverless: {workers_min: 3}\n",
                "`scaling.serverless.workers_min`: must not exceed `serverless.workers_max` (1), got 3",
            ),
            (
                "scaling:\n  serverless: {timeout: ten}\n",
                "`scaling.serverless.timeout`: expected a whole number, found string \"ten\"",
            ),
            ("gpu_count: 1.5\n", "`gpu_count`: expected a whole number, found floating point `1.5`"),
            ("public: yes\n", "`public`: expected true or false, found string \"yes\""),
            ("scaling: 5\n", "`scaling`: expected a mapping of keys, found integer `5`"),
            ("scaling:\n  spot: [1, 2]\n", "`scaling.spot`: expected a mapping of keys, found sequence"),
            ("service_name: My_Service\n", "`service_name`: `My_Service` is not a valid name"),
            ("service_name: 9lives\n", "`service_name`: `9lives` is not a valid name"),
            ("service_name: ends-\n", "`service_name`: `ends-` is not a valid name"),
            ("service_name: a-name-that-is-far-too-long-for-us\n", "is 34 characters long"),
            ("tp_size: 2\n", "`tp_size`: must not exceed `gpu_count` (1), got 2"),
            (
                "serverless_provider: lambda\n",
                "`serverless_provider`: `lambda` is not one of `modal`, `runpod`, `cloudrun`, `local`",
            ),
            (
                "serverless_provider: cloudrun\ngpu_count: 2\ntp_size: 2\n",
                "`gpu_count`: cloudrun gives exactly one GPU per instance, got 2",
            ),
            ("spots_cloud: oracle\n", "`spots_cloud`: `oracle` is not one of"),
            ("cold_start_mode: slow\n", "`cold_start_mode`: `slow` is not one of `fast_boot`, `no_fast_boot`"),
            ("router:\n  listen: nowhere\n", "`router.listen`: `nowhere` is not an address"),
            ("router:\n  api_keys: [{env: A, file: b}]\n", "`router.api_keys[0]`: give exactly one of"),
            (
                "router:\n  api_keys:\n    - env: 1BAD\n",
                "F:5:7: `router.api_keys[0].env`: is not an environment variable name (the value is not shown",
            ),
            ("router:\n  api_keys: [{value: k}]\n", "F:4:14: `router.api_keys[0]`: has an unknown key (not shown"),
            ("router:\n  admin_key: sk-live-123\n", "`router.admin_key`: expected a mapping with `env:` or `file:`"),
            (
                "public: true\nrouter:\n  api_keys: [{env: K}]\n",
                "`router.api_keys`: `public: true` turns client auth off",
            ),
            ("router: {max_attempts: 0}\n", "`router.max_attempts`: must be between 1 and 10, got 0"),
            ("region: ''\n", "`region`: must not be empty"),
            ("router: {router: 1}\n", "`router.router`: unknown key"),
            ("scaling:\n  spot: {pot: 1}\n", "`scaling.spot.pot`: unknown key"),
            ("router:\n  backends:\n    - {tier: spot}\n", "`router.backends[0]`: needs a `url`"),
            (
                "router:\n  backends:\n    - {tier: gpu, url: 'http://a'}\n",
                "`router.backends[0].tier`: `gpu` is not one of",
            ),
            (
                "router:\n  backends:\n    - {tier: spot, url: 'ftp://a'}\n",
                "`router.backends[0].url`: the scheme `ftp` is not supported",
            ),
            (
                "router:\n  backends:\n    - {tier: spot, url: 'http://a', bearer: {env: A}, modal_key: {env: B}}\n",
                "`router.backends[0]`: give one kind of backend auth",
            ),
            (
                "router:\n  backends:\n    - {tier: spot, url: 'http://a', capacity: 0}\n",
                "`router.backends[0].capacity`: must be between 1",
            ),
        ];
        for (extra, expected) in cases {
            let found = errors(&format!("{BASE}{extra}"));
            assert!(found.iter().any(|e| e.contains(expected)), "for {extra:?} expected {expected:?}, got {found:#?}");
        }
    }

    #[test]
    fn gpu_and_provider_problems_name_the_alternatives() {
        let found = errors("model: m\ngpu: L40X\n");
        assert_eq!(found, ["F:2:1: `gpu`: unknown GPU `L40X`; did you mean `L40`?"]);
        let found = errors("model: m\ngpu: T4\nserverless_provider: runpod\n");
        assert_eq!(found, ["F:3:1: `serverless_provider`: runpod has no T4 GPUs; offered by: modal"]);
        assert!(load("model: m\ngpu: T4\nserverless_provider: local\n", vec![]).is_ok(), "local runs any GPU");
    }

    #[test]
    fn all_problems_are_reported_at_once_and_missing_keys_name_the_flag() {
        let found = errors(
            "scaling:\n  spot: {target_qp: 1, min_replicas: -3}\n  serverless: {concurrency: 0}\nrouter: {nope: 1}\n",
        );
        assert_eq!(found.len(), 6, "{found:#?}");
        assert!(found.iter().any(|e| e.contains("`model`: is required: set `model:` in the file or pass --model")));
        assert!(found.iter().any(|e| e.contains("`gpu`: is required")));
    }

    #[test]
    fn flag_values_are_blamed_on_the_flag() {
        let bad = vec![Override::int("scaling.serverless.concurrency", "--concurrency", 0)];
        let found = load(BASE, bad).unwrap_err();
        assert_eq!(found, ["flag --concurrency: `scaling.serverless.concurrency`: must be between 1 and 1024, got 0"]);
    }

    #[test]
    fn scaling_policy_file_errors_use_that_files_paths() {
        let files = files(BASE, "spot:\n  upscale_dely: 3\nrouter: {}\n");
        let sources = Sources {
            deployment_file: Some(files.deployment.clone()),
            scaling_policy_file: Some(files.scaling.clone()),
            overrides: vec![],
        };
        let found: Vec<String> =
            sources.load(Catalog::embedded()).unwrap_err().violations.iter().map(|v| v.to_string()).collect();
        let policy = files.scaling.display().to_string();
        assert!(
            found.contains(&format!("{policy}:2:3: `spot.upscale_dely`: unknown key; did you mean `upscale_delay`?")),
            "{found:#?}"
        );
        assert!(
            found.contains(&format!("{policy}:3:1: `router`: unknown key; valid keys: spot, serverless")),
            "{found:#?}"
        );
    }

    #[test]
    fn fixed_backends_get_capacities_by_tier() {
        let yaml = format!(
            "{BASE}scaling: {{serverless: {{concurrency: 16, workers_max: 3}}}}\nrouter:\n  spot_capacity: 24\n  backends:\n    - {{tier: spot, url: 'http://10.0.0.5:8000'}}\n    - {{tier: serverless, url: 'https://x.modal.run', modal_key: {{env: MK}}, modal_secret: {{env: MS}}}}\n"
        );
        let spec = load(&yaml, vec![]).unwrap();
        let backends = &spec.router.backends;
        assert_eq!((backends[0].capacity, backends[1].capacity), (24, 48));
        assert!(matches!(backends[1].auth, crate::BackendAuthRef::Modal { .. }));
    }

    #[test]
    fn inline_secrets_are_never_repeated() {
        let found = errors(&format!("{BASE}router:\n  admin_key: sk-live-123\n  api_keys: [sk-live-456]\n"));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found.iter().all(|e| !e.contains("sk-live")), "{found:#?}");
    }

    /// Every duration key with where it is written and its range (`zero` when exactly 0
    /// has a meaning of its own), read back from the spec in seconds.
    #[allow(clippy::type_complexity)]
    const DURATIONS: &[(&str, &str, f64, f64, bool, fn(&DeploymentSpec) -> f64)] = &[
        ("router", "connect_timeout", 0.01, 300.0, false, |s| s.router.connect_timeout.as_secs_f64()),
        ("router", "first_byte_timeout", 0.1, 86_400.0, false, |s| s.router.first_byte_timeout.as_secs_f64()),
        ("router", "idle_timeout", 0.1, 86_400.0, false, |s| s.router.idle_timeout.as_secs_f64()),
        ("router", "queue_timeout", 0.01, 3600.0, true, |s| s.router.queue_timeout.as_secs_f64()),
        ("router", "keepalive_timeout", 1.0, 3600.0, false, |s| s.router.keepalive_timeout.as_secs_f64()),
        ("router", "header_timeout", 1.0, 300.0, false, |s| s.router.header_timeout.as_secs_f64()),
        ("router", "write_timeout", 1.0, 3600.0, false, |s| s.router.write_timeout.as_secs_f64()),
        ("local", "spot_boot_secs", 0.1, 1200.0, false, |s| s.local.spot_boot.as_secs_f64()),
        ("local", "cold_start_secs", 0.1, 600.0, false, |s| s.local.cold_start.as_secs_f64()),
    ];

    #[test]
    fn every_duration_is_bounded_and_out_of_range_values_name_the_range() {
        for &(section, key, min, max, zero, read) in DURATIONS {
            let yaml = |v: &str| format!("{BASE}{section}:\n  {key}: {v}\n");
            for ok in [min, max, (min + max) / 2.0] {
                let spec = load(&yaml(&ok.to_string()), vec![]).unwrap_or_else(|e| panic!("{key}: {ok}: {e:#?}"));
                assert!((read(&spec) - ok).abs() < 1e-9, "{key}: {ok} read back as {}", read(&spec));
            }
            let range = format!("between {min} and {max} seconds");
            let expected =
                if zero { format!("must be 0 (do not queue) or {range}") } else { format!("must be {range}") };
            for (bad, shown) in [
                ("1e-300", "1e-300"),
                ("0.0000001", "1e-7"),
                (&*(min / 2.0).to_string(), &*(min / 2.0).to_string()),
                (&*(max * 2.0).to_string(), &*(max * 2.0).to_string()),
                ("-1", "-1"),
                ("1e300", "1e300"),
                (".nan", "NaN"),
                (".inf", "inf"),
                ("-.inf", "-inf"),
            ] {
                let found = errors(&yaml(bad));
                assert_eq!(found, [format!("F:4:3: `{section}.{key}`: {expected}, got {shown}")], "{key}: {bad}");
            }
            match load(&yaml("0"), vec![]) {
                Ok(spec) if zero => assert_eq!(read(&spec), 0.0, "{key}"),
                Ok(_) => panic!("{key}: 0 should be refused"),
                Err(found) if zero => panic!("{key}: 0 should mean `do not queue`: {found:#?}"),
                Err(found) => assert!(found[0].contains(&expected), "{key}: {found:#?}"),
            }
        }
    }

    #[test]
    fn whole_second_scaling_keys_keep_their_ranges_and_zero_meanings() {
        let cases: &[(&str, &str, i64, i64)] = &[
            ("spot", "upscale_delay", 0, 3600),
            ("spot", "downscale_delay", 0, 86_400),
            ("spot", "demand_window", 1, 3600),
            ("serverless", "scaledown_window", 0, 86_400),
            ("serverless", "timeout", 1, 86_400),
            ("serverless", "scaler_value", 1, 3600),
        ];
        for &(tier, key, min, max) in cases {
            let yaml = |v: i64| format!("{BASE}scaling:\n  {tier}:\n    {key}: {v}\n");
            for ok in [min, max] {
                assert!(load(&yaml(ok), vec![]).is_ok(), "{key}: {ok}");
            }
            for bad in [min - 1, max + 1] {
                let found = errors(&yaml(bad));
                let expected = format!("F:5:5: `scaling.{tier}.{key}`: must be between {min} and {max}, got {bad}");
                assert_eq!(found, [expected], "{key}: {bad}");
            }
        }
        // The story test's quick settings stay valid.
        let quick = "scaling:\n  spot: {upscale_delay: 0, downscale_delay: 2, demand_window: 2}\n  serverless: {scaledown_window: 1}\nlocal: {spot_boot_secs: 2, cold_start_secs: 0.3}\n";
        assert!(load(&format!("{BASE}{quick}"), vec![]).is_ok());
    }

    #[test]
    fn new_router_limits_have_defaults_and_ranges() {
        let spec = load(BASE, vec![]).unwrap();
        let router = &spec.router;
        assert_eq!(
            (router.keepalive_timeout, router.header_timeout, router.write_timeout, router.max_connections),
            (Duration::from_secs(60), Duration::from_secs(10), Duration::from_secs(30), 10_000)
        );
        let yaml = "router: {keepalive_timeout: 5.5, header_timeout: 2, write_timeout: 3600, max_connections: 16}\n";
        let router = load(&format!("{BASE}{yaml}"), vec![]).unwrap().router;
        assert_eq!(
            (router.keepalive_timeout, router.header_timeout, router.write_timeout, router.max_connections),
            (Duration::from_millis(5500), Duration::from_secs(2), Duration::from_secs(3600), 16)
        );
        for (bad, expected) in [
            ("max_connections: 15", "F:4:3: `router.max_connections`: must be between 16 and 1000000, got 15"),
            ("max_connections: 1000001", "must be between 16 and 1000000, got 1000001"),
            ("max_connections: 1.5", "`router.max_connections`: expected a whole number"),
            ("header_timeout: 301", "`router.header_timeout`: must be between 1 and 300 seconds, got 301"),
        ] {
            let found = errors(&format!("{BASE}router:\n  {bad}\n"));
            assert!(found.iter().any(|e| e.contains(expected)), "{bad}: {found:#?}");
        }
    }

    #[test]
    fn messages_never_repeat_what_may_be_a_secret() {
        let cases = [
            "router:\n  api_keys: [{env: sk-live-123}]\n",
            "router:\n  api_keys: [{env: 'sk-live-123 '}]\n",
            "router:\n  admin_key: {env: \"sk-live-123\\n\"}\n",
            "router:\n  admin_key: {file: \"sk-live-123\\n\"}\n",
            "router:\n  api_keys: sk-live-123\n",
            "router:\n  api_keys: [sk-live-123]\n",
            "router:\n  admin_key: {sk-live-123}\n",
            "router:\n  admin_key: {sk-live-123: x}\n",
            "router:\n  admin_key: {env: [sk-live-123]}\n",
            "router:\n  backends:\n    - {tier: spot, url: 'http://h', bearer: {token: sk-live-123}}\n",
            "router:\n  backends: ['http://user:sk-live-123@h']\n",
            "router:\n  backends: 'http://h/?key=sk-live-123'\n",
            "router:\n  backends:\n    - {tier: spot, url: 'http://user:sk-live-123@h'}\n",
            "router:\n  backends:\n    - {tier: spot, url: 'http://h/v1?key=sk-live-123'}\n",
            "router:\n  backends:\n    - {tier: spot, url: 'http://h/v1#sk-live-123'}\n",
            "router:\n  backends:\n    - {tier: spot, url: 'sk-live-123'}\n",
            "router:\n  backends:\n    - {tier: spot, url: 'http://h:sk-live-123'}\n",
            "local:\n  command: 'vllm serve {model} --api-key sk-live-123'\n",
            "router: 'sk-live-123'\n",
            "local: 'sk-live-123'\n",
            // A token pasted into a key that takes a number or a flag.
            "router:\n  header_timeout: sk-live-123\n",
            "router:\n  health_public: sk-live-123\n",
            "router:\n  listen: sk-live-123\n",
            "router:\n  backends:\n    - {tier: spot, url: 'http://h', capacity: sk-live-123}\n",
        ];
        for extra in cases {
            let found = errors(&format!("{BASE}{extra}"));
            assert!(found.iter().all(|e| !e.contains("sk-live")), "{extra:?}: {found:#?}");
        }
        let found = errors(&format!("{BASE}router:\n  api_keys: [{{env: sk-live-123}}]\n"));
        assert!(found[0].contains("such as `RUNPOD_API_KEY`"), "{found:#?}");
        let found = errors(&format!("{BASE}router:\n  admin_key: {{sk-live-123: x}}\n"));
        assert!(found[0].starts_with("F:4:3: `router.admin_key`: has an unknown key (not shown"), "{found:#?}");
        // Words where numbers go are still shown: they help and are no secret.
        let found = errors(&format!("{BASE}router: {{max_attempts: three}}\n"));
        assert_eq!(found, ["F:3:10: `router.max_attempts`: expected a whole number, found string \"three\""]);
    }

    #[test]
    fn null_sections_count_as_absent() {
        let spec = load(&format!("{BASE}scaling:\n  spot:\nrouter: ~\n"), vec![]).unwrap();
        assert_eq!(spec.scaling, ScalingPolicy::default());
    }

    #[test]
    fn unreadable_and_empty_files_are_reported() {
        let sources = Sources { deployment_file: Some("/nonexistent/t.yaml".into()), ..Sources::default() };
        let err = sources.load(Catalog::embedded()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/t.yaml: cannot read the file"), "{err}");
        assert!(errors("")[0].contains("the file is empty"));
    }

    #[test]
    fn service_names_follow_the_provider_safe_rule() {
        for ok in ["a", "svc-1", "tandemn-0a1b2c3d", "abcdefghijklmnopqrstuvwxyz0123"] {
            assert!(crate::check_service_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "1a", "a_b", "a.b", "a-", "abcdefghijklmnopqrstuvwxyz01234", "ä"] {
            assert!(crate::check_service_name(bad).is_err(), "{bad}");
        }
    }
}
