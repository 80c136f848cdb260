//! Local state in SQLite: one file under `$TANDEMN_HOME` (default `~/.tandemn`),
//! WAL mode, readable by its owner only. Schema changes are numbered migrations.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
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
    // 3: no secrets at rest. The admin and client keys older versions kept in `runs` are
    // dropped, and `scrub_pending` asks for the file to be vacuumed (see `scrub`), so no
    // freed page keeps a copy; `status` authenticates with a per-run token that opens
    // `/router/health` only.
    "ALTER TABLE runs DROP COLUMN api_key;
    ALTER TABLE runs DROP COLUMN admin_key;
    ALTER TABLE runs ADD COLUMN health_token TEXT;
    CREATE TABLE scrub_pending (since_version INTEGER NOT NULL);
    INSERT INTO scrub_pending VALUES (3);",
    // 4: replicas and the serverless endpoint are known by their provider reference (a
    // cloud resource has no pid), and where the cloud placed a replica prices its bill.
    "ALTER TABLE replicas DROP COLUMN pid;
    ALTER TABLE replicas DROP COLUMN pid_started;
    ALTER TABLE replicas ADD COLUMN provider_ref TEXT;
    ALTER TABLE replicas ADD COLUMN placement TEXT;
    ALTER TABLE runs DROP COLUMN serverless_pid;
    ALTER TABLE runs DROP COLUMN serverless_pid_started;
    ALTER TABLE runs ADD COLUMN serverless_ref TEXT;",
];

const FILE_NAME: &str = "state.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("neither TANDEMN_HOME nor HOME is set, so there is nowhere to keep state")]
    NoHome,
    // The cause is in the message and deliberately not a `#[source]`: printed as a chain,
    // it would say the same thing twice (`state.db: X: X`).
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: {error}")]
    Sqlite { path: PathBuf, error: rusqlite::Error },
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
        let io = |path: &Path, error| StoreError::Io { path: path.to_path_buf(), error };
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(FILE_NAME);
        // Only a missing file is created here: closing any descriptor of an open SQLite
        // file drops every lock this process holds on it (POSIX locks), which would let
        // another process delete the WAL under this process's other connections.
        if !path.exists() {
            OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(|e| io(&path, e))?;
        }
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).map_err(|e| io(&path, e))?;

        let sqlite = |error| StoreError::Sqlite { path: path.clone(), error };
        let connection = Connection::open(&path).map_err(sqlite)?;
        connection.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        // Switching a new file to WAL takes an exclusive lock that SQLite does not wait for
        // while another connection is switching too (waiting could deadlock): retry.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match connection.pragma_update(None, "journal_mode", "WAL") {
                Err(error)
                    if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                done => break done.map_err(sqlite)?,
            }
        }
        connection.pragma_update(None, "foreign_keys", true).map_err(sqlite)?;
        let mut store = Self { connection, path };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A value of the wrong type in one of `service`'s rows is that deployment's
    /// corruption, said in words; any other failure is the store's.
    fn row_error(&self, service: &str, table: &str, error: rusqlite::Error) -> StoreError {
        let column = match &error {
            rusqlite::Error::InvalidColumnType(_, name, _) => name.clone(),
            rusqlite::Error::IntegralValueOutOfRange(index, _)
            | rusqlite::Error::FromSqlConversionFailure(index, _, _) => format!("column {index}"),
            _ => return StoreError::Sqlite { path: self.path.clone(), error },
        };
        StoreError::Corrupt {
            path: self.path.clone(),
            name: service.to_string(),
            detail: format!("{table}: {}", column_problem(&column, &error)),
        }
    }

    fn sqlite(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |error| StoreError::Sqlite { path: self.path.clone(), error }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sqlite = |error| StoreError::Sqlite { path: path.clone(), error };
        let version = |connection: &Connection| -> Result<usize, StoreError> {
            let applied: usize = connection.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sqlite)?;
            if applied > MIGRATIONS.len() {
                return Err(StoreError::NewerSchema { path: path.clone(), found: applied, known: MIGRATIONS.len() });
            }
            Ok(applied)
        };
        if version(&self.connection)? == MIGRATIONS.len() {
            self.scrub();
            return Ok(());
        }
        // One process migrates at a time: the write lock is taken before the version is
        // read again, so two processes opening a new file do not both create its tables.
        let tx = self.connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite)?;
        let applied = version(&tx)?;
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
            tx.execute_batch(migration).map_err(sqlite)?;
            tx.pragma_update(None, "user_version", index + 1).map_err(sqlite)?;
        }
        tx.commit().map_err(sqlite)?;
        self.scrub();
        Ok(())
    }

    /// A dropped column's old values stay in freed pages and in the WAL until they are
    /// overwritten: VACUUM rewrites the file, the checkpoint empties the WAL. Until that
    /// succeeds (another process may hold the file), every open tries again.
    fn scrub(&self) {
        let pending = self
            .connection
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'scrub_pending'", [], |r| {
                r.get::<_, i64>(0)
            })
            .is_ok_and(|n| n > 0);
        if !pending {
            return;
        }
        let scrubbed = self
            .connection
            .execute_batch("VACUUM; DROP TABLE scrub_pending;")
            .and_then(|()| self.connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())));
        if let Err(error) = scrubbed {
            tracing::warn!(path = %self.path.display(), %error, "could not vacuum the state store yet; trying again at the next open");
        }
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

    /// One deployment; a row that cannot be read is `StoreError::Corrupt`, naming what is wrong.
    pub fn deployment(&self, service_name: &str) -> Result<Option<Deployment>, StoreError> {
        let mut statement =
            self.connection.prepare(&format!("{SELECT} WHERE service_name = ?1")).map_err(self.sqlite())?;
        let raw = statement.query_row([service_name], RawRow::read).optional().map_err(self.sqlite())?;
        raw.map(|raw| raw.and_then(|raw| raw.into_deployment()).map_err(|bad| bad.into_error(&self.path))).transpose()
    }

    /// Deployments, newest first, optionally only those with `status`. A row that cannot
    /// be read is listed apart (as `StoreError::Corrupt`), so one bad row hides no other.
    pub fn deployments(&self, status: Option<DeploymentStatus>) -> Result<Listing, StoreError> {
        let mut statement = self
            .connection
            .prepare(&format!("{SELECT} WHERE ?1 IS NULL OR status = ?1 ORDER BY created_at_ms DESC, service_name"))
            .map_err(self.sqlite())?;
        let rows = statement
            .query_map([status.map(DeploymentStatus::as_str)], RawRow::read)
            .map_err(self.sqlite())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sqlite())?;
        let mut listing = Listing::default();
        for row in rows {
            match row.and_then(RawRow::into_deployment) {
                Ok(deployment) => listing.deployments.push(deployment),
                Err(bad) => listing.unreadable.push(bad.into_error(&self.path)),
            }
        }
        Ok(listing)
    }
}

/// What `StateStore::deployments` found: the rows it could read, and the others.
#[derive(Debug, Default)]
pub struct Listing {
    pub deployments: Vec<Deployment>,
    /// One `StoreError::Corrupt` per row that could not be read.
    pub unreadable: Vec<StoreError>,
}

const SELECT: &str = "SELECT service_name, status, created_at_ms, updated_at_ms, model, gpu, gpu_count,
    serverless_provider, spots_cloud, region, config_json, rowid FROM deployments";

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

/// A row that could not be read: which one, and what is wrong with it.
struct BadRow {
    name: String,
    detail: String,
}

impl BadRow {
    fn into_error(self, path: &Path) -> StoreError {
        StoreError::Corrupt { path: path.to_path_buf(), name: self.name, detail: self.detail }
    }
}

impl RawRow {
    /// Reads a row; a column of the wrong type or NULL makes this row bad, not the query.
    fn read(row: &Row<'_>) -> rusqlite::Result<Result<Self, BadRow>> {
        let rowid: i64 = row.get(11)?;
        let service_name = match row.get::<_, String>(0) {
            Ok(name) => name,
            Err(error) => {
                let detail = column_problem("service_name", &error);
                return Ok(Err(BadRow { name: format!("<unnamed, rowid {rowid}>"), detail }));
            }
        };
        let bad = |column: &str, error: rusqlite::Error| BadRow {
            name: service_name.clone(),
            detail: column_problem(column, &error),
        };
        macro_rules! column {
            ($index:expr, $name:expr) => {
                match row.get($index) {
                    Ok(value) => value,
                    Err(error) => return Ok(Err(bad($name, error))),
                }
            };
        }
        Ok(Ok(Self {
            status: column!(1, "status"),
            created_at_ms: column!(2, "created_at_ms"),
            updated_at_ms: column!(3, "updated_at_ms"),
            model: column!(4, "model"),
            gpu: column!(5, "gpu"),
            gpu_count: column!(6, "gpu_count"),
            serverless_provider: column!(7, "serverless_provider"),
            spots_cloud: column!(8, "spots_cloud"),
            region: column!(9, "region"),
            config_json: column!(10, "config_json"),
            service_name,
        }))
    }

    fn into_deployment(self) -> Result<Deployment, BadRow> {
        let name = self.service_name.clone();
        let corrupt = |detail: String| BadRow { name: name.clone(), detail };
        let status = DeploymentStatus::parse(&self.status)
            .ok_or_else(|| corrupt(format!("unknown status `{}`", self.status)))?;
        let config = serde_json::from_str(&self.config_json).map_err(|e| corrupt(format!("config_json: {e}")))?;
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

/// What is wrong with one column, in words (SQLite's own message names an index).
fn column_problem(column: &str, error: &rusqlite::Error) -> String {
    use rusqlite::types::Type;
    match error {
        rusqlite::Error::InvalidColumnType(_, _, Type::Null) => format!("`{column}` is NULL"),
        rusqlite::Error::InvalidColumnType(_, _, found) => {
            format!("`{column}` holds {}, not the expected type", found.to_string().to_lowercase())
        }
        rusqlite::Error::IntegralValueOutOfRange(_, value) => format!("`{column}` is out of range: {value}"),
        rusqlite::Error::FromSqlConversionFailure(_, _, cause) => format!("`{column}`: {cause}"),
        other => format!("`{column}`: {other}"),
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
            store.deployments(status).unwrap().deployments.into_iter().map(|d| d.service_name).collect()
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

    #[test]
    fn processes_opening_a_new_store_at_once_migrate_it_once() {
        // Each round a fresh file, opened by several connections at the same moment (as
        // two deploys started together, or a deploy and a `list`, would).
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            // Created first, as `open` does: threads of one process closing a descriptor of
            // the file would drop each other's POSIX locks, which processes do not.
            OpenOptions::new().create(true).append(true).mode(0o600).open(dir.path().join(FILE_NAME)).unwrap();
            let barrier = std::sync::Barrier::new(6);
            std::thread::scope(|scope| {
                let opened: Vec<_> = (0..6)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            StateStore::open(dir.path()).map(drop)
                        })
                    })
                    .collect();
                for open in opened {
                    open.join().unwrap().unwrap();
                }
            });
        }
    }

    /// Builds a store as tandemn 0.1 (schema 2) left it: keys in `runs`, older runs' keys
    /// in freed pages, the journal in WAL mode.
    fn schema_2_with_secrets(dir: &Path) {
        let connection = Connection::open(dir.join(FILE_NAME)).unwrap();
        connection.pragma_update(None, "journal_mode", "WAL").unwrap();
        for migration in &MIGRATIONS[..2] {
            connection.execute_batch(migration).unwrap();
        }
        connection.pragma_update(None, "user_version", 2).unwrap();
        let insert = |name: &str, client: &str, admin: &str| {
            connection
                .execute(
                    "INSERT INTO runs (service_name, pid, endpoint, api_key, admin_key, started_at_ms, updated_at_ms)
                     VALUES (?1, 42, 'http://127.0.0.1:1', ?2, ?3, 1000, 1000)",
                    params![name, client, admin],
                )
                .unwrap();
        };
        // Enough older runs to fill pages that the delete then frees whole.
        for n in 0..200 {
            insert(&format!("old-{n}"), "tdn-OLD-CLIENT-SECRET", "tdn-admin-OLD-ADMIN-SECRET");
        }
        connection.execute("DELETE FROM runs WHERE service_name LIKE 'old-%'", []).unwrap();
        insert("svc", "tdn-CLIENT-SECRET", "tdn-admin-ADMIN-SECRET");
        connection
            .execute(
                "INSERT INTO replicas (service_name, replica, url, pid, pid_started, phase, launched_at_ms)
                 VALUES ('svc', 'spot-1', 'http://127.0.0.1:9', 7, 1, 'ready', 1000)",
                [],
            )
            .unwrap();
    }

    /// Every byte SQLite keeps for the store: the file, its WAL and its shared memory.
    fn raw_bytes(dir: &Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            bytes.extend(std::fs::read(dir.join(format!("{FILE_NAME}{suffix}"))).unwrap_or_default());
        }
        bytes
    }

    fn holds(haystack: &[u8], needle: &str) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[test]
    fn upgrading_erases_the_keys_older_versions_stored() {
        let dir = tempfile::tempdir().unwrap();
        schema_2_with_secrets(dir.path());
        assert!(holds(&raw_bytes(dir.path()), "ADMIN-SECRET"), "the fixture holds the keys");

        let store = StateStore::open(dir.path()).unwrap();
        let version: usize = store.connection.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len());
        let run = store.run("svc").unwrap().unwrap();
        assert_eq!((run.pid, run.health_token), (42, None), "the run survives, without a token");
        // A replica of the pid era keeps its record; it has no provider reference.
        let replicas = store.replicas("svc").unwrap();
        assert_eq!(replicas.len(), 1);
        assert_eq!((replicas[0].url.as_deref(), &replicas[0].reference), (Some("http://127.0.0.1:9"), &None));
        let columns: Vec<String> = store
            .connection
            .prepare("SELECT name FROM pragma_table_info('runs')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!columns.iter().any(|c| c == "api_key" || c == "admin_key"), "{columns:?}");
        assert!(columns.iter().any(|c| c == "health_token"), "{columns:?}");
        let pending: i64 = store
            .connection
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'scrub_pending'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pending, 0, "the scrub is done");
        let bytes = raw_bytes(dir.path());
        for secret in ["CLIENT-SECRET", "ADMIN-SECRET"] {
            assert!(!holds(&bytes, secret), "{secret} is still in the file or its journal");
        }
        // Opening again (nothing left to migrate) changes nothing.
        drop(store);
        StateStore::open(dir.path()).unwrap();
    }

    #[test]
    fn a_corrupt_row_is_listed_apart_and_hides_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        for name in ["good", "status", "blob", "json", "count", "time"] {
            store.save_deployment(&spec(name), DeploymentStatus::Active).unwrap();
        }
        let corrupt = [
            "UPDATE deployments SET status = 'exploded' WHERE service_name = 'status'",
            // NOT NULL keeps NULLs out of most columns; a wrong type gets in.
            "UPDATE deployments SET model = X'DEADBEEF' WHERE service_name = 'blob'",
            "UPDATE deployments SET created_at_ms = 'yesterday' WHERE service_name = 'time'",
            "UPDATE deployments SET config_json = '{not json' WHERE service_name = 'json'",
            "UPDATE deployments SET gpu_count = 'many' WHERE service_name = 'count'",
            "INSERT INTO deployments SELECT NULL, status, created_at_ms, updated_at_ms, model, gpu, gpu_count,
                 serverless_provider, spots_cloud, region, config_json FROM deployments WHERE service_name = 'good'",
        ];
        for sql in corrupt {
            store.connection.execute(sql, []).unwrap();
        }
        let listing = store.deployments(None).unwrap();
        assert_eq!(listing.deployments.iter().map(|d| d.service_name.as_str()).collect::<Vec<_>>(), ["good"]);
        let mut problems: Vec<String> = listing
            .unreadable
            .iter()
            .map(|e| match e {
                StoreError::Corrupt { name, detail, .. } => format!("{name}: {detail}"),
                other => panic!("{other}"),
            })
            .collect();
        problems.sort();
        let expected = [
            "<unnamed, rowid 7>: `service_name` is NULL",
            "blob: `model` holds blob, not the expected type",
            "count: `gpu_count` holds text, not the expected type",
            "json: config_json: key must be a string at line 1 column 2",
            "status: unknown status `exploded`",
            "time: `created_at_ms` holds text, not the expected type",
        ];
        assert_eq!(problems, expected);
        // One deployment's lookup names its problem the same way.
        let error = store.deployment("blob").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: deployment `blob` has an unreadable record: `model` holds blob, not the expected type",
                store.path().display()
            )
        );
        assert!(store.deployment("good").unwrap().is_some());
        // A filter sees only rows whose status it can match.
        assert_eq!(store.deployments(Some(DeploymentStatus::Active)).unwrap().unreadable.len(), 5);
    }
}
