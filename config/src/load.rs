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
        out.push(origins.violation(&path, describe(&message)));
        if path.is_empty() || !remove_path(&mut value, &path) {
            return None;
        }
    }
    None
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
        let expected = match expected {
            "i64" => "a whole number",
            "f64" => "a number",
            "a boolean" => "true or false",
            "a sequence" => "a list",
            // Never repeat what was written: it may be the secret itself.
            "struct RawSecret" => {
                return "expected a mapping with `env:` or `file:`; secrets are read from the environment or \
                        a file, never written inline (the value is not shown)"
                    .to_string();
            }
            other if other.starts_with("struct ") => "a mapping of keys",
            other => other,
        };
        return format!("expected {expected}, found {found}");
    }
    message.to_string()
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
                "F:5:7: `router.api_keys[0].env`: `1BAD` is not an environment variable name",
            ),
            ("router:\n  api_keys: [{value: k}]\n", "`router.api_keys[0].value`: unknown key; valid keys: env, file"),
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
                "`router.backends[0].url`: `ftp://a` must start with",
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
