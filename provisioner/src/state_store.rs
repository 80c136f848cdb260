//! Local state in SQLite: one file under `$TANDEMN_HOME` (default `~/.tandemn`),
//! WAL mode, readable by its owner only. Schema changes are numbered migrations.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, params};
use tandemn_config::{Choice, DeploymentSpec};

mod runs;
pub use runs::{ContainerRow, Event, Phase, ReplicaRow, Run, Usage};

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
/// Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: deployments and their validated configuration.
    "CREATE TABLE deployments (
        service_name        TEXT PRIMARY KEY,
        status              TEXT NOT NULL,
        created_at_ms       INTEGER NOT NULL,
        updated_at_ms       INTEGER NOT NULL,
        model               TEXT NOT NULL,
        gpu                 TEXT NOT NULL,
        gpu_count           INTEGER NOT NULL,
        serverless_provider TEXT NOT NULL,
        spots_cloud         TEXT NOT NULL,
        region              TEXT,
        config_json         TEXT NOT NULL
    );
    CREATE INDEX deployments_by_created ON deployments (created_at_ms DESC);",
    // 2: what a running deployment did: its process and endpoint, replicas and their
    // lifecycle events, serverless containers as billed, and the usage the cost needs.
    "CREATE TABLE runs (
        service_name        TEXT PRIMARY KEY,
        pid                 INTEGER NOT NULL,
        pid_started         INTEGER,
        endpoint            TEXT NOT NULL,
        api_key             TEXT,
        admin_key           TEXT NOT NULL,
        started_at_ms       INTEGER NOT NULL,
        updated_at_ms       INTEGER NOT NULL,
        ended_at_ms         INTEGER,
        serverless_url      TEXT,
        serverless_pid      INTEGER,
        serverless_pid_started INTEGER,
        arrived             INTEGER NOT NULL DEFAULT 0,
        spot_requests       INTEGER NOT NULL DEFAULT 0,
        serverless_requests INTEGER NOT NULL DEFAULT 0,
        pure_serverless_ms  INTEGER NOT NULL DEFAULT 0,
        peak_replicas       INTEGER NOT NULL DEFAULT 0,
        desired_replicas    INTEGER NOT NULL DEFAULT 0,
        serverless_running  INTEGER NOT NULL DEFAULT 0,
        note                TEXT
    );
    CREATE TABLE replicas (
        service_name   TEXT NOT NULL,
        replica        TEXT NOT NULL,
        url            TEXT NOT NULL,
        pid            INTEGER,
        pid_started    INTEGER,
        phase          TEXT NOT NULL,
        launched_at_ms INTEGER NOT NULL,
        ended_at_ms    INTEGER,
        detail         TEXT,
        PRIMARY KEY (service_name, replica)
    );
    CREATE TABLE events (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        service_name TEXT NOT NULL,
        replica      TEXT NOT NULL,
        phase        TEXT NOT NULL,
        at_ms        INTEGER NOT NULL,
        detail       TEXT
    );
    CREATE INDEX events_by_service ON events (service_name, id);
    CREATE TABLE containers (
        service_name  TEXT NOT NULL,
        container     INTEGER NOT NULL,
        started_at_ms INTEGER NOT NULL,
        stopped_at_ms INTEGER,
        PRIMARY KEY (service_name, container)
    );",
];

const FILE_NAME: &str = "state.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("neither TANDEMN_HOME nor HOME is set, so there is nowhere to keep state")]
    NoHome,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("{path} was written by a newer tandemn (schema version {found}, this one knows {known}); upgrade tandemn")]
    NewerSchema { path: PathBuf, found: usize, known: usize },
    #[error("{path}: deployment `{name}` has an unreadable record: {detail}")]
    Corrupt { path: PathBuf, name: String, detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentStatus {
    Deploying,
    Active,
    Failed,
    Destroyed,
}

impl DeploymentStatus {
    pub const ALL: [DeploymentStatus; 4] = [Self::Deploying, Self::Active, Self::Failed, Self::Destroyed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploying => "deploying",
            Self::Active => "active",
            Self::Failed => "failed",
            Self::Destroyed => "destroyed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One deployment as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployment {
    pub service_name: String,
    pub status: DeploymentStatus,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: SystemTime,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: SystemTime,
    pub model: String,
    pub gpu: String,
    pub gpu_count: u32,
    pub serverless_provider: String,
    pub spots_cloud: String,
    pub region: Option<String>,
    /// The validated `DeploymentSpec` as JSON, with the YAML's key names.
    pub config: serde_json::Value,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_seconds(*time))
}

pub struct StateStore {
    connection: Connection,
    path: PathBuf,
}

impl StateStore {
    /// `$TANDEMN_HOME`, else `~/.tandemn`.
    pub fn default_dir() -> Result<PathBuf, StoreError> {
        match (std::env::var_os("TANDEMN_HOME"), std::env::var_os("HOME")) {
            (Some(home), _) if !home.is_empty() => Ok(PathBuf::from(home)),
            (_, Some(home)) if !home.is_empty() => Ok(Path::new(&home).join(".tandemn")),
            _ => Err(StoreError::NoHome),
        }
    }

    pub fn open_default() -> Result<Self, StoreError> {
        Self::open(&Self::default_dir()?)
    }

    /// Opens (creating if needed) the store in `dir`; the directory is made 0700 and
    /// the database 0600 before SQLite writes anything to it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |path: &Path, source| StoreError::Io { path: path.to_path_buf(), source };
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(FILE_NAME);
        // Only a missing file is created here: closing any descriptor of an open SQLite
        // file drops every lock this process holds on it (POSIX locks), which would let
        // another process delete the WAL under this process's other connections.
        if !path.exists() {
            OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(|e| io(&path, e))?;
        }
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).map_err(|e| io(&path, e))?;

        let sqlite = |source| StoreError::Sqlite { path: path.clone(), source };
        let connection = Connection::open(&path).map_err(sqlite)?;
        connection.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
        connection.pragma_update(None, "foreign_keys", true).map_err(sqlite)?;
        let mut store = Self { connection, path };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite { path: self.path.clone(), source }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite { path: path.clone(), source };
        let applied: usize = self.connection.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sqlite)?;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::NewerSchema { path: path.clone(), found: applied, known: MIGRATIONS.len() });
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = self.connection.transaction().map_err(sqlite)?;
            tx.execute_batch(migration).map_err(sqlite)?;
            tx.pragma_update(None, "user_version", index + 1).map_err(sqlite)?;
            tx.commit().map_err(sqlite)?;
        }
        Ok(())
    }

    /// Inserts or updates a deployment; `created_at` is kept from the first save.
    pub fn save_deployment(&self, spec: &DeploymentSpec, status: DeploymentStatus) -> Result<(), StoreError> {
        let config = serde_json::to_string(spec).expect("a DeploymentSpec always serializes to JSON");
        let now = millis(SystemTime::now());
        self.connection
            .execute(
                "INSERT INTO deployments (service_name, status, created_at_ms, updated_at_ms, model, gpu,
                     gpu_count, serverless_provider, spots_cloud, region, config_json)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (service_name) DO UPDATE SET
                     status = excluded.status, updated_at_ms = excluded.updated_at_ms,
                     model = excluded.model, gpu = excluded.gpu, gpu_count = excluded.gpu_count,
                     serverless_provider = excluded.serverless_provider,
                     spots_cloud = excluded.spots_cloud, region = excluded.region,
                     config_json = excluded.config_json",
                params![
                    spec.service_name,
                    status.as_str(),
                    now,
                    spec.model,
                    spec.gpu,
                    spec.gpu_count,
                    spec.serverless_provider.as_str(),
                    spec.spots_cloud.as_str(),
                    spec.region,
                    config,
                ],
            )
            .map_err(self.sqlite())?;
        Ok(())
    }

    /// Sets a deployment's status; false if no such deployment exists.
    pub fn set_status(&self, service_name: &str, status: DeploymentStatus) -> Result<bool, StoreError> {
        let changed = self
            .connection
            .execute(
                "UPDATE deployments SET status = ?2, updated_at_ms = ?3 WHERE service_name = ?1",
                params![service_name, status.as_str(), millis(SystemTime::now())],
            )
            .map_err(self.sqlite())?;
        Ok(changed == 1)
    }

    pub fn deployment(&self, service_name: &str) -> Result<Option<Deployment>, StoreError> {
        let mut statement =
            self.connection.prepare(&format!("{SELECT} WHERE service_name = ?1")).map_err(self.sqlite())?;
        let raw = statement.query_row([service_name], RawRow::read).optional().map_err(self.sqlite())?;
        raw.map(|raw| raw.into_deployment(&self.path)).transpose()
    }

    /// Deployments, newest first, optionally only those with `status`.
    pub fn deployments(&self, status: Option<DeploymentStatus>) -> Result<Vec<Deployment>, StoreError> {
        let mut statement = self
            .connection
            .prepare(&format!("{SELECT} WHERE ?1 IS NULL OR status = ?1 ORDER BY created_at_ms DESC, service_name"))
            .map_err(self.sqlite())?;
        let rows = statement
            .query_map([status.map(DeploymentStatus::as_str)], RawRow::read)
            .map_err(self.sqlite())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sqlite())?;
        rows.into_iter().map(|raw| raw.into_deployment(&self.path)).collect()
    }
}

const SELECT: &str = "SELECT service_name, status, created_at_ms, updated_at_ms, model, gpu, gpu_count,
    serverless_provider, spots_cloud, region, config_json FROM deployments";

/// A row as SQLite holds it, before its text columns are parsed.
struct RawRow {
    service_name: String,
    status: String,
    created_at_ms: i64,
    updated_at_ms: i64,
    model: String,
    gpu: String,
    gpu_count: u32,
    serverless_provider: String,
    spots_cloud: String,
    region: Option<String>,
    config_json: String,
}

impl RawRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            service_name: row.get(0)?,
            status: row.get(1)?,
            created_at_ms: row.get(2)?,
            updated_at_ms: row.get(3)?,
            model: row.get(4)?,
            gpu: row.get(5)?,
            gpu_count: row.get(6)?,
            serverless_provider: row.get(7)?,
            spots_cloud: row.get(8)?,
            region: row.get(9)?,
            config_json: row.get(10)?,
        })
    }

    fn into_deployment(self, path: &Path) -> Result<Deployment, StoreError> {
        let corrupt =
            |detail: String| StoreError::Corrupt { path: path.to_path_buf(), name: self.service_name.clone(), detail };
        let status = DeploymentStatus::parse(&self.status)
            .ok_or_else(|| corrupt(format!("unknown status `{}`", self.status)))?;
        let config = serde_json::from_str(&self.config_json).map_err(|e| corrupt(format!("config: {e}")))?;
        Ok(Deployment {
            service_name: self.service_name,
            status,
            created_at: time(self.created_at_ms),
            updated_at: time(self.updated_at_ms),
            model: self.model,
            gpu: self.gpu,
            gpu_count: self.gpu_count,
            serverless_provider: self.serverless_provider,
            spots_cloud: self.spots_cloud,
            region: self.region,
            config,
        })
    }
}

pub(crate) fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn time(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandemn_config::{Catalog, Override, Sources};

    fn spec(name: &str) -> DeploymentSpec {
        let overrides = vec![
            Override::text("service_name", "--service-name", name),
            Override::text("model", "--model", "Qwen/Qwen3-0.6B"),
            Override::text("gpu", "--gpu", "L4"),
        ];
        Sources { overrides, ..Sources::default() }.load(Catalog::embedded()).unwrap()
    }

    #[test]
    fn files_are_private_and_the_journal_is_wal() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let store = StateStore::open(&home).unwrap();
        store.save_deployment(&spec("a"), DeploymentStatus::Active).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home), 0o700);
        assert_eq!(mode(store.path()), 0o600);
        let wal = home.join(format!("{FILE_NAME}-wal"));
        assert!(wal.exists(), "WAL journal is in use");
        assert_eq!(mode(&wal), 0o600);
        let journal: String = store.connection.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(journal, "wal");
    }

    #[test]
    fn an_existing_file_with_loose_permissions_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        StateStore::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn deployments_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            store.save_deployment(&spec("first"), DeploymentStatus::Deploying).unwrap();
            store.save_deployment(&spec("second"), DeploymentStatus::Active).unwrap();
            assert!(store.set_status("first", DeploymentStatus::Failed).unwrap());
            assert!(!store.set_status("missing", DeploymentStatus::Failed).unwrap());
        }
        let store = StateStore::open(dir.path()).unwrap();
        let first = store.deployment("first").unwrap().unwrap();
        assert_eq!(first.status, DeploymentStatus::Failed);
        assert_eq!((first.model.as_str(), first.gpu.as_str(), first.gpu_count), ("Qwen/Qwen3-0.6B", "L4", 1));
        assert_eq!(first.serverless_provider, "runpod");
        assert_eq!(first.config["scaling"]["spot"]["max_replicas"], 8);
        assert!(store.deployment("missing").unwrap().is_none());

        let names = |status| -> Vec<String> {
            store.deployments(status).unwrap().into_iter().map(|d| d.service_name).collect()
        };
        assert_eq!(names(None).len(), 2);
        assert_eq!(names(Some(DeploymentStatus::Active)), ["second"]);
        assert_eq!(names(Some(DeploymentStatus::Failed)), ["first"]);
        assert!(names(Some(DeploymentStatus::Destroyed)).is_empty());
    }

    #[test]
    fn saving_again_keeps_the_creation_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.save_deployment(&spec("svc"), DeploymentStatus::Deploying).unwrap();
        store.connection.execute("UPDATE deployments SET created_at_ms = 1000", []).unwrap();
        store.save_deployment(&spec("svc"), DeploymentStatus::Active).unwrap();
        let record = store.deployment("svc").unwrap().unwrap();
        assert_eq!(record.created_at, time(1000));
        assert!(record.updated_at > record.created_at);
        assert_eq!(record.status, DeploymentStatus::Active);
    }

    #[test]
    fn migrations_are_counted_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let version: usize = store.connection.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len());
        store.connection.pragma_update(None, "user_version", MIGRATIONS.len() + 1).unwrap();
        drop(store);
        let err = StateStore::open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
        assert!(err.to_string().contains("upgrade tandemn"));
    }
}
