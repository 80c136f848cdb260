//! The task YAML of one spot replica: one SkyPilot cluster that runs one vLLM server.
//! Rendered from typed structs by `serde_yaml` (stable field order), never pasted
//! together. The replica key reaches vLLM as the `VLLM_API_KEY` secret (which SkyPilot
//! redacts in its own displays), so it is never on a command line or in `run`; the
//! printable form ([`TaskSpec`]'s `Display`) shows it as `***`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use tandemn_config::api::Secret;

use crate::provider::ReplicaId;

/// The vLLM installed on a replica without a Docker image (providers.md §7 checked 0.33.0).
pub const VLLM_VERSION: &str = "0.33.0";
/// The engine port when none is configured.
pub const DEFAULT_ENGINE_PORT: u16 = 8000;
/// The boot disk when none is configured (GB): a vLLM install plus a small model's weights.
pub const DEFAULT_DISK_GB: u32 = 100;
/// The environment variable vLLM reads its API key from (`--api-key`'s default).
pub const KEY_ENV: &str = "VLLM_API_KEY";

/// Everything a replica's task is rendered from.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub name: ReplicaId,
    /// SkyPilot's cloud name (`aws`).
    pub cloud: String,
    pub region: Option<String>,
    /// SkyPilot's accelerator name ([`sky_accelerator`]), not the catalog's.
    pub accelerator: String,
    pub gpu_count: u32,
    pub model: String,
    pub tp_size: u32,
    pub max_model_len: u32,
    pub engine_port: u16,
    pub disk_size_gb: u32,
    /// A Docker image with vLLM in it; without one, setup installs [`VLLM_VERSION`].
    pub image: Option<String>,
    pub replica_key: Secret,
}

#[derive(Serialize)]
struct RawTask<'a> {
    name: &'a str,
    resources: RawResources<'a>,
    envs: BTreeMap<&'static str, &'a str>,
    secrets: BTreeMap<&'static str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    setup: Option<String>,
    run: String,
}

#[derive(Serialize)]
struct RawResources<'a> {
    cloud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    accelerators: String,
    use_spot: bool,
    ports: u16,
    disk_size: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_id: Option<String>,
}

/// The task YAML to send, with the replica key in it. Never log or print it: print the
/// spec (`{spec}`) instead.
pub fn render(spec: &TaskSpec) -> String {
    render_with_key(spec, spec.replica_key.expose())
}

fn render_with_key(spec: &TaskSpec, key: &str) -> String {
    let run = format!(
        "vllm serve {} --host 0.0.0.0 --port {} --tensor-parallel-size {} --max-model-len {}",
        shell_quote(&spec.model),
        spec.engine_port,
        spec.tp_size,
        spec.max_model_len
    );
    let task = RawTask {
        name: spec.name.as_str(),
        resources: RawResources {
            cloud: &spec.cloud,
            region: spec.region.as_deref(),
            accelerators: format!("{}:{}", spec.accelerator, spec.gpu_count),
            use_spot: true,
            ports: spec.engine_port,
            disk_size: spec.disk_size_gb,
            image_id: spec.image.as_ref().map(|image| format!("docker:{image}")),
        },
        envs: BTreeMap::from([("MODEL", spec.model.as_str())]),
        secrets: BTreeMap::from([(KEY_ENV, key)]),
        setup: spec.image.is_none().then(|| format!("pip install vllm=={VLLM_VERSION}")),
        run,
    };
    // Plain strings, numbers and maps with string keys always serialize.
    serde_yaml::to_string(&task).unwrap_or_default()
}

/// The YAML as it may be shown (`deploy --dry-run`, logs): the key is `***`.
impl fmt::Display for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render_with_key(self, "***"))
    }
}

/// SkyPilot's name for a catalog GPU on AWS (its catalog's `AcceleratorName`), or why
/// there is none.
pub fn sky_accelerator(catalog_gpu: &str) -> Result<&'static str, String> {
    // Catalog name -> SkyPilot's AWS accelerator name (skypilot-catalog v8
    // common/accelerators.csv, the AWS rows).
    const AWS: [(&str, &str); 9] = [
        ("T4", "T4"),
        ("A10G", "A10G"),
        ("L4", "L4"),
        ("L40S", "L40S"),
        ("A100_40GB", "A100"),
        ("A100_80GB", "A100-80GB"),
        ("H100", "H100"),
        ("H200", "H200"),
        ("B200", "B200"),
    ];
    AWS.iter().find(|(ours, _)| ours.eq_ignore_ascii_case(catalog_gpu)).map(|(_, sky)| *sky).ok_or_else(|| {
        let offered: Vec<&str> = AWS.iter().map(|(ours, _)| *ours).collect();
        format!("GPU `{catalog_gpu}` is not offered by AWS through SkyPilot; AWS spot offers {}", offered.join(", "))
    })
}

/// `text` as one shell word: as is when it has only safe characters, else single-quoted.
pub fn shell_quote(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./:@%+=,-".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// An obvious test value, so no golden file holds a real secret.
    const TEST_KEY: &str = "TEST-REPLICA-KEY-not-a-secret";

    fn default_spec() -> TaskSpec {
        TaskSpec {
            name: ReplicaId::parse("qwen-t5bbxc-1").unwrap(),
            cloud: "aws".into(),
            region: None,
            accelerator: sky_accelerator("L4").unwrap().into(),
            gpu_count: 1,
            model: "Qwen/Qwen3-0.6B".into(),
            tp_size: 1,
            max_model_len: 8192,
            engine_port: DEFAULT_ENGINE_PORT,
            disk_size_gb: DEFAULT_DISK_GB,
            image: None,
            replica_key: Secret::new(TEST_KEY),
        }
    }

    fn region_docker_tp2_spec() -> TaskSpec {
        TaskSpec {
            name: ReplicaId::parse("llama-t5bbxc-2").unwrap(),
            region: Some("us-east-2".into()),
            accelerator: sky_accelerator("A10G").unwrap().into(),
            gpu_count: 2,
            model: "meta-llama/Llama-3.1-8B-Instruct".into(),
            tp_size: 2,
            max_model_len: 16384,
            engine_port: 8080,
            disk_size_gb: 200,
            image: Some("vllm/vllm-openai:v0.33.0".into()),
            ..default_spec()
        }
    }

    /// The golden files and the specs they are rendered from.
    pub(crate) fn goldens() -> Vec<(&'static str, TaskSpec)> {
        vec![("default.yaml", default_spec()), ("region_docker_tp2.yaml", region_docker_tp2_spec())]
    }

    fn testdata() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/skypilot/testdata")
    }

    #[test]
    fn rendered_tasks_match_the_golden_files() {
        let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
        for (file, spec) in goldens() {
            let path = testdata().join(file);
            let rendered = render(&spec);
            if update {
                std::fs::write(&path, &rendered).unwrap();
            }
            let golden = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
            assert_eq!(rendered, golden, "{file} differs; if the change is meant, rerun with UPDATE_GOLDEN=1");
        }
    }

    #[test]
    fn the_printable_form_hides_the_key_and_the_run_never_holds_it() {
        for (file, spec) in goldens() {
            let shown = spec.to_string();
            assert!(!shown.contains(TEST_KEY), "{file}: {shown}");
            let mut sent: serde_yaml::Value = serde_yaml::from_str(&render(&spec)).unwrap();
            sent["secrets"][KEY_ENV] = "***".into();
            assert_eq!(
                serde_yaml::from_str::<serde_yaml::Value>(&shown).unwrap(),
                sent,
                "{file}: only the key differs"
            );
            assert!(!format!("{spec:?}").contains(TEST_KEY));
            let task: serde_yaml::Value = serde_yaml::from_str(&render(&spec)).unwrap();
            assert_eq!(task["secrets"][KEY_ENV].as_str(), Some(TEST_KEY));
            assert!(!task["run"].as_str().unwrap().contains(TEST_KEY));
            assert!(task["envs"].as_mapping().unwrap().values().all(|v| v.as_str() != Some(TEST_KEY)));
        }
    }

    #[test]
    fn the_task_has_the_replica_shape() {
        let task: serde_yaml::Value = serde_yaml::from_str(&render(&region_docker_tp2_spec())).unwrap();
        let resources = &task["resources"];
        assert_eq!(task["name"].as_str(), Some("llama-t5bbxc-2"));
        assert_eq!(resources["accelerators"].as_str(), Some("A10G:2"));
        assert_eq!(resources["use_spot"].as_bool(), Some(true));
        assert_eq!(resources["region"].as_str(), Some("us-east-2"));
        assert_eq!(resources["ports"].as_u64(), Some(8080));
        assert_eq!(resources["image_id"].as_str(), Some("docker:vllm/vllm-openai:v0.33.0"));
        assert!(task.get("setup").is_none(), "an image brings its own vLLM");
        let run = task["run"].as_str().unwrap();
        assert!(
            run.contains("--tensor-parallel-size 2")
                && run.contains("--port 8080")
                && run.contains("--max-model-len 16384")
        );

        let plain: serde_yaml::Value = serde_yaml::from_str(&render(&default_spec())).unwrap();
        assert_eq!(plain["setup"].as_str(), Some("pip install vllm==0.33.0"));
        assert!(plain["resources"].get("region").is_none() && plain["resources"].get("image_id").is_none());
    }

    #[test]
    fn models_are_shell_quoted() {
        let cases = [
            ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B"),
            ("my model", "'my model'"),
            ("a;rm -rf /", "'a;rm -rf /'"),
            ("it's", r"'it'\''s'"),
            ("$(x)", "'$(x)'"),
            ("", "''"),
        ];
        for (model, quoted) in cases {
            assert_eq!(shell_quote(model), quoted, "{model}");
        }
        let spec = TaskSpec { model: "org/odd model".into(), ..default_spec() };
        let task: serde_yaml::Value = serde_yaml::from_str(&render(&spec)).unwrap();
        assert!(task["run"].as_str().unwrap().starts_with("vllm serve 'org/odd model' --host"));
    }

    #[test]
    fn catalog_gpus_map_to_skypilot_names() {
        let cases = [
            ("L4", Ok("L4")),
            ("a10g", Ok("A10G")),
            ("A100_80GB", Ok("A100-80GB")),
            ("A100_40GB", Ok("A100")),
            ("H100", Ok("H100")),
        ];
        for (gpu, want) in cases {
            assert_eq!(sky_accelerator(gpu), want.map_err(|_: ()| String::new()), "{gpu}");
        }
        let error = sky_accelerator("RTX4090").unwrap_err();
        assert!(error.contains("RTX4090") && error.contains("L4"), "{error}");
    }
}
