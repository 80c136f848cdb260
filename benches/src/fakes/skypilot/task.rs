//! The task YAML as the fake reads it: the keys SkyPilot's schema knows (a typo is
//! refused with a hint, as the real `InvalidSkyPilotConfigError` does), the resources a
//! replica asks for, and the small AWS catalog that turns a GPU into an instance type.
//! Only parsing and checking happens here; nothing is launched.

use serde_yaml::{Mapping, Value};

use super::ApiError;

/// Top-level task keys of SkyPilot 0.14's schema.
const TASK_KEYS: &[&str] = &[
    "name",
    "workdir",
    "event_callback",
    "num_nodes",
    "resources",
    "file_mounts",
    "setup",
    "run",
    "envs",
    "secrets",
    "service",
    "pool",
    "inputs",
    "outputs",
    "config",
    "volumes",
];

/// `resources:` keys of the same schema. The fake acts on cloud, infra, region, zone,
/// accelerators, use_spot, ports, disk_size and autostop; the others are accepted and ignored.
const RESOURCES_KEYS: &[&str] = &[
    "cloud",
    "infra",
    "region",
    "zone",
    "accelerators",
    "accelerator_args",
    "instance_type",
    "cpus",
    "memory",
    "use_spot",
    "job_recovery",
    "spot_recovery",
    "disk_size",
    "disk_tier",
    "network_tier",
    "ports",
    "image_id",
    "labels",
    "autostop",
    "any_of",
    "ordered",
    "priority",
];

const CLOUDS: &[&str] = &[
    "aws",
    "gcp",
    "azure",
    "kubernetes",
    "lambda",
    "runpod",
    "oci",
    "ibm",
    "scp",
    "vsphere",
    "cudo",
    "fluidstack",
    "paperspace",
    "do",
    "nebius",
    "vast",
    "hyperbolic",
    "seeweb",
    "ssh",
    "slurm",
];

const AWS_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "sa-east-1",
];

pub const DEFAULT_REGION: &str = "us-east-2";

/// An AWS instance type of the fake's catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    pub gpu: &'static str,
    pub gpus: u32,
    pub instance_type: &'static str,
    pub vcpus: u32,
    pub memory_gb: u32,
}

/// GPU instances SkyPilot picks on AWS for the GPUs Tandemn offers.
const CATALOG: &[Instance] = &[
    Instance { gpu: "L4", gpus: 1, instance_type: "g6.xlarge", vcpus: 4, memory_gb: 16 },
    Instance { gpu: "L4", gpus: 4, instance_type: "g6.12xlarge", vcpus: 48, memory_gb: 192 },
    Instance { gpu: "L4", gpus: 8, instance_type: "g6.48xlarge", vcpus: 192, memory_gb: 768 },
    Instance { gpu: "A10G", gpus: 1, instance_type: "g5.xlarge", vcpus: 4, memory_gb: 16 },
    Instance { gpu: "A10G", gpus: 4, instance_type: "g5.12xlarge", vcpus: 48, memory_gb: 192 },
    Instance { gpu: "A10G", gpus: 8, instance_type: "g5.48xlarge", vcpus: 192, memory_gb: 768 },
    Instance { gpu: "T4", gpus: 1, instance_type: "g4dn.xlarge", vcpus: 4, memory_gb: 16 },
    Instance { gpu: "T4", gpus: 4, instance_type: "g4dn.12xlarge", vcpus: 48, memory_gb: 192 },
    Instance { gpu: "L40S", gpus: 1, instance_type: "g6e.xlarge", vcpus: 4, memory_gb: 32 },
    Instance { gpu: "L40S", gpus: 4, instance_type: "g6e.12xlarge", vcpus: 48, memory_gb: 384 },
    Instance { gpu: "L40S", gpus: 8, instance_type: "g6e.48xlarge", vcpus: 192, memory_gb: 1536 },
];

/// One task of a launch or a validated DAG.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub resources: Resources,
    /// `envs` then `secrets`, in file order: the engine's whole environment.
    pub env: Vec<(String, String)>,
    pub run: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resources {
    /// Lower-case cloud name, from `cloud` or the first part of `infra`.
    pub cloud: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// Canonical GPU name (upper case as the catalog spells it) and count.
    pub accelerator: Option<(String, u32)>,
    pub use_spot: bool,
    /// Opened port ranges, inclusive.
    pub ports: Vec<(u16, u16)>,
    pub disk_size: Option<String>,
    /// Idle minutes before autostop, `-1` for none (the real `/status` `autostop`).
    pub autostop_minutes: i64,
    pub autostop_down: bool,
}

/// Where a launch lands: what the fake's cloud bills.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub region: String,
    pub zone: String,
    pub instance: Instance,
    pub spot: bool,
}

impl TaskSpec {
    /// Every task of a YAML text. A DAG's leading document that holds only `name`
    /// (how SkyPilot writes a chain DAG) is skipped.
    pub fn all_from_yaml(text: &str) -> Result<Vec<TaskSpec>, ApiError> {
        let mut documents = Vec::new();
        for document in serde_yaml::Deserializer::from_str(text) {
            let value = <Value as serde::Deserialize>::deserialize(document)
                .map_err(|e| ApiError::new("ValueError", format!("Invalid YAML: {e}")))?;
            documents.push(value);
        }
        let dag_header = |v: &Value| v.as_mapping().is_some_and(|m| m.len() == 1 && m.contains_key("name"));
        if documents.len() > 1 && dag_header(&documents[0]) {
            documents.remove(0);
        }
        if documents.is_empty() {
            return Err(invalid_config("Invalid task YAML: the YAML is empty."));
        }
        documents.iter().map(TaskSpec::from_value).collect()
    }

    /// The one task of a launch.
    pub fn from_yaml(text: &str) -> Result<TaskSpec, ApiError> {
        let mut tasks = Self::all_from_yaml(text)?;
        if tasks.len() != 1 {
            return Err(ApiError::new(
                "NotSupportedError",
                format!("the fake SkyPilot launches one task, this YAML has {}", tasks.len()),
            ));
        }
        Ok(tasks.remove(0))
    }

    fn from_value(value: &Value) -> Result<TaskSpec, ApiError> {
        let task =
            value.as_mapping().ok_or_else(|| invalid_config("Invalid task YAML: the task is not of type 'object'."))?;
        check_keys(task, TASK_KEYS, "task")?;
        let resources = match task.get("resources") {
            None | Some(Value::Null) => Resources { autostop_minutes: -1, ..Resources::default() },
            Some(value) => Resources::from_value(value)?,
        };
        let mut env = string_map(task.get("envs"), "envs")?;
        env.extend(string_map(task.get("secrets"), "secrets")?);
        let run = match task.get("run") {
            None | Some(Value::Null) => None,
            Some(Value::String(run)) => Some(run.clone()),
            Some(_) => return Err(schema_error("run", "is not of type 'string'")),
        };
        Ok(TaskSpec { resources, env, run })
    }

    /// The model the engine serves: the first word after `vllm serve` in `run`
    /// (with `$VAR`/`${VAR}` taken from envs and secrets), else the `MODEL` env.
    pub fn model(&self) -> Option<String> {
        let from_run = self.serve_args().and_then(|args| args.first().map(|word| self.expand(word)));
        from_run.or_else(|| self.env_var("MODEL").map(str::to_string))
    }

    /// `--api-key` of `vllm serve`, expanded: the fake hands it to the engine as
    /// `VLLM_API_KEY`, never on a command line.
    pub fn api_key(&self) -> Option<String> {
        self.serve_flag("--api-key")
    }

    pub fn max_model_len(&self) -> Option<String> {
        self.serve_flag("--max-model-len")
    }

    fn serve_flag(&self, flag: &str) -> Option<String> {
        let args = self.serve_args()?;
        let prefix = format!("{flag}=");
        args.iter().enumerate().find_map(|(i, word)| match word.strip_prefix(&prefix) {
            Some(value) => Some(self.expand(value)),
            None if *word == flag => args.get(i + 1).map(|value| self.expand(value)),
            None => None,
        })
    }

    /// The words after `vllm serve`, up to the end of that shell command.
    fn serve_args(&self) -> Option<Vec<&str>> {
        let run = self.run.as_deref()?;
        let words: Vec<&str> = run.split_whitespace().filter(|w| *w != "\\").collect();
        let start = words.windows(2).position(|pair| pair[0].ends_with("vllm") && pair[1] == "serve")? + 2;
        let rest = &words[start..];
        let end = rest.iter().position(|w| matches!(*w, "&&" | "||" | ";" | "|" | "&")).unwrap_or(rest.len());
        Some(rest[..end].iter().map(|w| w.trim_matches(|c| c == '"' || c == '\'')).collect())
    }

    fn expand(&self, word: &str) -> String {
        let name = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')).or_else(|| word.strip_prefix('$'));
        match name {
            Some(name) => self.env_var(name).unwrap_or_default().to_string(),
            None => word.to_string(),
        }
    }

    fn env_var(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

impl Resources {
    fn from_value(value: &Value) -> Result<Resources, ApiError> {
        let map = value
            .as_mapping()
            .ok_or_else(|| invalid_config("Invalid resources YAML: resources is not of type 'object'."))?;
        check_keys(map, RESOURCES_KEYS, "resources")?;
        let text = |key: &str| -> Result<Option<String>, ApiError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(schema_error(key, "is not of type 'string'")),
            }
        };
        let mut resources = Resources {
            cloud: text("cloud")?.map(|c| c.to_ascii_lowercase()),
            region: text("region")?,
            zone: text("zone")?,
            autostop_minutes: -1,
            ..Resources::default()
        };
        if let Some(infra) = text("infra")? {
            resources.apply_infra(&infra)?;
        }
        if let Some(cloud) = &resources.cloud
            && !CLOUDS.contains(&cloud.as_str())
        {
            return Err(ApiError::new("ValueError", format!("Invalid cloud '{cloud}'.")));
        }
        if let (Some(region), Some("aws") | None) = (&resources.region, resources.cloud.as_deref())
            && !AWS_REGIONS.contains(&region.as_str())
        {
            return Err(ApiError::new(
                "ValueError",
                format!("Invalid region '{region}'\nDid you mean one of these: 'us-east-1, us-east-2'?"),
            ));
        }
        resources.accelerator = map.get("accelerators").map(accelerator).transpose()?.flatten();
        resources.use_spot = match map.get("use_spot") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(spot)) => *spot,
            Some(_) => return Err(schema_error("use_spot", "is not of type 'boolean'")),
        };
        resources.ports = map.get("ports").map(ports).transpose()?.unwrap_or_default();
        resources.disk_size = map.get("disk_size").map(disk_size).transpose()?;
        if let Some(value) = map.get("autostop") {
            (resources.autostop_minutes, resources.autostop_down) = autostop(value)?;
        }
        Ok(resources)
    }

    /// `infra: aws`, `aws/us-east-2` or `aws/us-east-2/us-east-2a`.
    fn apply_infra(&mut self, infra: &str) -> Result<(), ApiError> {
        if self.cloud.is_some() || self.region.is_some() {
            return Err(invalid_config("Invalid resources YAML: infra cannot be set with cloud or region."));
        }
        let mut parts = infra.split('/');
        self.cloud = parts.next().map(str::to_ascii_lowercase);
        self.region = parts.next().map(str::to_string);
        self.zone = parts.next().map(str::to_string);
        Ok(())
    }

    /// The instance the fake's AWS gives this request, or the optimizer's refusal.
    pub fn place(&self) -> Result<Placement, ApiError> {
        if let Some(cloud) = self.cloud.as_deref().filter(|c| *c != "aws") {
            return Err(ApiError::new(
                "ResourcesUnavailableError",
                format!(
                    "Cloud \u{1b}[1m{}\u{1b}[0m is not enabled. Enabled infra: [AWS]. Run \u{1b}[1msky check\u{1b}[0m.",
                    cloud.to_ascii_uppercase()
                ),
            ));
        }
        let spot = if self.use_spot { "[Spot], " } else { "" };
        let Some((gpu, count)) = &self.accelerator else {
            return Err(ApiError::new(
                "ResourcesUnavailableError",
                format!(
                    "Catalog does not contain any instances satisfying the request: 1x AWS({spot}no accelerators). \
                     The fake SkyPilot's catalog has GPU instances only ({}).",
                    catalog_gpus()
                ),
            ));
        };
        let instance = CATALOG.iter().find(|i| i.gpu == gpu && i.gpus == *count).ok_or_else(|| {
            ApiError::new(
                "ResourcesUnavailableError",
                format!(
                    "Catalog does not contain any instances satisfying the request: \u{1b}[1m1x AWS({spot}{{'{gpu}': \
                     {count}}})\u{1b}[0m. The fake SkyPilot's catalog has {}.",
                    catalog_gpus()
                ),
            )
        })?;
        let region = self.region.clone().unwrap_or_else(|| DEFAULT_REGION.to_string());
        let zone = self.zone.clone().unwrap_or_else(|| format!("{region}a"));
        Ok(Placement { region, zone, instance: *instance, spot: self.use_spot })
    }

    pub fn exposes(&self, port: u16) -> bool {
        self.ports.iter().any(|(low, high)| (*low..=*high).contains(&port))
    }
}

fn catalog_gpus() -> String {
    CATALOG.iter().map(|i| format!("{}:{}", i.gpu, i.gpus)).collect::<Vec<_>>().join(", ")
}

fn invalid_config(message: &str) -> ApiError {
    ApiError::new("InvalidSkyPilotConfigError", message.to_string())
}

fn schema_error(field: &str, problem: &str) -> ApiError {
    ApiError::new(
        "InvalidSkyPilotConfigError",
        format!("Invalid task YAML: the value of {field} {problem}. Check problematic field(s): $.{field}"),
    )
}

/// Refuses keys the schema does not know, suggesting the closest known one.
fn check_keys(map: &Mapping, known: &[&str], what: &str) -> Result<(), ApiError> {
    for key in map.keys() {
        let key = key.as_str().unwrap_or_default();
        if known.contains(&key) {
            continue;
        }
        let closest = known.iter().min_by_key(|k| strsim::osa_distance(key, k)).filter(|k| {
            let distance = strsim::osa_distance(key, k);
            distance <= 2 && distance < key.len()
        });
        let message = match closest {
            Some(suggestion) => format!("Invalid {what} YAML: Instead of '{key}', did you mean '{suggestion}'?"),
            None => format!("Invalid {what} YAML: Additional properties are not allowed ('{key}' was unexpected)"),
        };
        return Err(invalid_config(&message));
    }
    Ok(())
}

fn string_map(value: Option<&Value>, field: &str) -> Result<Vec<(String, String)>, ApiError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Mapping(map)) => map,
        Some(_) => return Err(schema_error(field, "is not of type 'object'")),
    };
    map.iter()
        .map(|(key, value)| {
            let key = match key {
                Value::String(key) => key.clone(),
                _ => return Err(schema_error(field, "has a key that is not a string")),
            };
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => {
                    return Err(ApiError::new(
                        "ValueError",
                        format!("Environment variable {key:?} of {field} is None. Give it a value."),
                    ));
                }
                _ => return Err(schema_error(field, &format!("has a value of {key} that is not a string"))),
            };
            Ok((key, value))
        })
        .collect()
}

/// `L4`, `L4:2` or `{L4: 2}`; the name is matched to the catalog's spelling.
fn accelerator(value: &Value) -> Result<Option<(String, u32)>, ApiError> {
    let (name, count) = match value {
        Value::Null => return Ok(None),
        Value::String(text) => match text.split_once(':') {
            Some((name, count)) => (name.trim().to_string(), count.trim().to_string()),
            None => (text.trim().to_string(), "1".to_string()),
        },
        Value::Mapping(map) if map.len() == 1 => {
            let (name, count) = map.iter().next().expect("a mapping of length 1 has an entry");
            let name = name.as_str().ok_or_else(|| schema_error("accelerators", "has a non-string name"))?;
            let count = match count {
                Value::Number(n) => n.to_string(),
                Value::Null => "1".to_string(),
                _ => return Err(schema_error("accelerators", "has a count that is not a number")),
            };
            (name.to_string(), count)
        }
        _ => return Err(schema_error("accelerators", "is not a string such as 'L4:1'")),
    };
    let count: u32 = count.parse().ok().filter(|c| *c > 0).ok_or_else(|| {
        ApiError::new("ValueError", format!("Invalid accelerator count '{count}' of {name}; use a whole number ≥ 1."))
    })?;
    let canonical = CATALOG.iter().find(|i| i.gpu.eq_ignore_ascii_case(&name)).map_or(name, |i| i.gpu.to_string());
    Ok(Some((canonical, count)))
}

fn ports(value: &Value) -> Result<Vec<(u16, u16)>, ApiError> {
    let one = |value: &Value| -> Result<(u16, u16), ApiError> {
        let text = match value {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => return Err(ApiError::new("ValueError", format!("Invalid port range {value:?}."))),
        };
        let invalid = || {
            ApiError::new(
                "ValueError",
                format!("Invalid port range {text}. Use a port such as 8000 or a range 8000-8010."),
            )
        };
        let (low, high) = text.split_once('-').unwrap_or((&text, &text));
        let low: u16 = low.trim().parse().map_err(|_| invalid())?;
        let high: u16 = high.trim().parse().map_err(|_| invalid())?;
        if low == 0 || low > high {
            return Err(invalid());
        }
        Ok((low, high))
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items.iter().map(one).collect(),
        single => Ok(vec![one(single)?]),
    }
}

fn disk_size(value: &Value) -> Result<String, ApiError> {
    let text = match value {
        Value::Number(n) if n.as_u64().is_some() => return Ok(n.to_string()),
        Value::String(s) => s.clone(),
        _ => return Err(schema_error("disk_size", "is not an integer or a size such as '256GB'")),
    };
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = text[digits.len()..].to_ascii_lowercase();
    let units = ["", "kb", "ki", "mb", "mi", "gb", "gi", "tb", "ti", "pb", "pi"];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !units.contains(&unit.as_str()) {
        return Err(schema_error(
            "disk_size",
            &format!("'{text}' does not match '^[0-9]+(kb|ki|mb|mi|gb|gi|tb|ti|pb|pi)?$'"),
        ));
    }
    Ok(text)
}

/// `autostop: 10`, `true`, `false` or `{idle_minutes: 10, down: true}`.
fn autostop(value: &Value) -> Result<(i64, bool), ApiError> {
    let invalid = || {
        invalid_config(
            "Invalid resources YAML: autostop is not valid under any of the given schemas. \
             Check problematic field(s): $.autostop",
        )
    };
    match value {
        Value::Null | Value::Bool(false) => Ok((-1, false)),
        Value::Bool(true) => Ok((5, false)),
        Value::Number(n) => n.as_i64().filter(|m| *m >= 0).map(|m| (m, false)).ok_or_else(invalid),
        Value::Mapping(map) => {
            let mut minutes = 5;
            let mut down = false;
            for (key, value) in map {
                match (key.as_str(), value) {
                    (Some("idle_minutes"), Value::Number(n)) => minutes = n.as_i64().ok_or_else(invalid)?,
                    (Some("down"), Value::Bool(b)) => down = *b,
                    (Some("wait_for"), Value::String(_)) => {}
                    _ => return Err(invalid()),
                }
            }
            Ok((minutes, down))
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLICA: &str = "\
resources:
  cloud: aws
  region: us-east-1
  accelerators: L4:1
  use_spot: true
  ports: 8000
  disk_size: 256
envs:
  MAX_LEN: \"4096\"
secrets:
  VLLM_API_KEY: k-123
run: |
  vllm serve Qwen/Qwen3-0.6B --port 8000 --max-model-len $MAX_LEN --api-key $VLLM_API_KEY
";

    #[test]
    fn a_replica_task_parses_and_places_on_the_catalog() {
        let task = TaskSpec::from_yaml(REPLICA).unwrap();
        assert_eq!(task.model().as_deref(), Some("Qwen/Qwen3-0.6B"));
        assert_eq!(task.api_key().as_deref(), Some("k-123"));
        assert_eq!(task.max_model_len().as_deref(), Some("4096"));
        assert!(task.resources.exposes(8000) && !task.resources.exposes(8001));
        let placement = task.resources.place().unwrap();
        assert_eq!(placement.instance.instance_type, "g6.xlarge");
        assert_eq!(
            (placement.region.as_str(), placement.zone.as_str(), placement.spot),
            ("us-east-1", "us-east-1a", true)
        );
    }

    #[test]
    fn gpus_map_to_instance_types_and_unknown_ones_are_unavailable() {
        let cases = [
            ("L4:1", Ok("g6.xlarge")),
            ("a10g", Ok("g5.xlarge")),
            ("{T4: 1}", Ok("g4dn.xlarge")),
            ("L40S:4", Ok("g6e.12xlarge")),
            ("FOO:1", Err("ResourcesUnavailableError")),
            ("L4:3", Err("ResourcesUnavailableError")),
        ];
        for (accelerators, expected) in cases {
            let yaml = format!("resources: {{accelerators: {accelerators}}}\nrun: vllm serve m");
            let placed = TaskSpec::from_yaml(&yaml).unwrap().resources.place();
            match expected {
                Ok(instance_type) => {
                    assert_eq!(placed.unwrap().instance.instance_type, instance_type, "{accelerators}")
                }
                Err(kind) => assert_eq!(placed.unwrap_err().kind, kind, "{accelerators}"),
            }
        }
    }

    #[test]
    fn schema_errors_name_the_field() {
        let cases = [
            ("resources: {use_spotz: true}", "InvalidSkyPilotConfigError", "did you mean 'use_spot'"),
            ("runn: x", "InvalidSkyPilotConfigError", "did you mean 'run'"),
            ("resources: {region: us-west-9}", "ValueError", "Invalid region 'us-west-9'"),
            ("resources: {ports: eighty}", "ValueError", "Invalid port range eighty"),
            ("resources: {disk_size: big}", "InvalidSkyPilotConfigError", "$.disk_size"),
            ("resources: {autostop: {idle_minute: 5}}", "InvalidSkyPilotConfigError", "$.autostop"),
            ("resources: {use_spot: yes please}", "InvalidSkyPilotConfigError", "$.use_spot"),
            ("envs: {A: null}", "ValueError", "\"A\""),
            ("resources: {cloud: awz}", "ValueError", "Invalid cloud 'awz'"),
            ("a: [", "ValueError", "Invalid YAML"),
        ];
        for (yaml, kind, needle) in cases {
            let error = TaskSpec::from_yaml(yaml).unwrap_err();
            assert_eq!(error.kind, kind, "{yaml}: {}", error.message);
            assert!(error.message.contains(needle), "{yaml}: {}", error.message);
        }
    }

    #[test]
    fn the_model_comes_from_run_or_the_model_env() {
        let cases = [
            ("run: vllm serve org/m --port 8000", Some("org/m")),
            ("run: \"pip install x && python -m vllm serve \\\"org/m\\\" && echo\"", Some("org/m")),
            ("envs: {M: org/x}\nrun: vllm serve ${M}", Some("org/x")),
            ("envs: {MODEL: org/env}\nrun: python serve.py", Some("org/env")),
            ("run: echo hi", None),
        ];
        for (yaml, model) in cases {
            assert_eq!(TaskSpec::from_yaml(yaml).unwrap().model().as_deref(), model, "{yaml}");
        }
    }

    #[test]
    fn infra_sets_cloud_region_and_zone_and_a_dag_header_is_skipped() {
        let task = TaskSpec::from_yaml("name: d\n---\nresources: {infra: aws/us-west-2/us-west-2b}").unwrap();
        assert_eq!(task.resources.cloud.as_deref(), Some("aws"));
        assert_eq!(task.resources.region.as_deref(), Some("us-west-2"));
        assert_eq!(task.resources.zone.as_deref(), Some("us-west-2b"));
        let gcp = TaskSpec::from_yaml("resources: {cloud: gcp, accelerators: L4}").unwrap();
        assert_eq!(gcp.resources.place().unwrap_err().kind, "ResourcesUnavailableError");
    }
}
