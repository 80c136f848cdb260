//! What a running deployment records: its run (process, endpoint, health token, usage), each
//! replica's lifecycle as timestamped events, and serverless containers as billed.
//! `status`, `cost` and `destroy` read these from other processes.

use rusqlite::{OptionalExtension, Row, params};

use super::{StateStore, StoreError};
use crate::provider::{Endpoint, Placement, ReplicaRef};

/// A replica's place in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Launched; no address yet.
    Provisioning,
    /// Has an address; the engine is not ready yet.
    Booting,
    Ready,
    Draining,
    /// Being stopped: billed until the provider confirms (retried until it does).
    Terminating,
    Terminated,
    Preempted,
    Failed,
}

impl Phase {
    const ALL: [Phase; 8] = [
        Self::Provisioning,
        Self::Booting,
        Self::Ready,
        Self::Draining,
        Self::Terminating,
        Self::Terminated,
        Self::Preempted,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Booting => "booting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Terminating => "terminating",
            Self::Terminated => "terminated",
            Self::Preempted => "preempted",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Billing stops here: the replica is gone.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Terminated | Self::Preempted | Self::Failed)
    }
}

/// Counters the cost report needs, kept up to date while the deployment runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub arrived: u64,
    pub spot_requests: u64,
    pub serverless_requests: u64,
    /// Container time the same traffic would have been billed on serverless alone.
    pub pure_serverless_ms: u64,
    /// The most spot replicas the autoscaler asked for at once.
    pub peak_replicas: u32,
    pub desired_replicas: u32,
    pub serverless_running: u32,
}

/// One run of a deployment: the process serving it and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub service_name: String,
    pub pid: u32,
    /// When that process started: a later process with the same pid is not this one.
    pub pid_started: Option<u64>,
    pub endpoint: String,
    /// Opens the run's `GET /router/health` and nothing else, so `status` can read it.
    /// The client and admin keys are never stored.
    pub health_token: Option<String>,
    pub started_at_ms: u64,
    pub updated_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub serverless_url: Option<String>,
    /// The serverless endpoint as its provider knows it (without its credentials).
    pub serverless: Option<Endpoint>,
    pub usage: Usage,
    /// What the provisioner wants the operator to know (a relaunch backoff, an error).
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaRow {
    pub replica: String,
    /// Known once the provider reports it.
    pub url: Option<String>,
    /// What any process needs to poll or terminate the replica.
    pub reference: Option<ReplicaRef>,
    /// Where the cloud placed it, which prices its bill.
    pub placement: Option<Placement>,
    pub phase: Phase,
    pub launched_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ContainerRow {
    pub container: u64,
    pub started_at_ms: u64,
    pub stopped_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    pub replica: String,
    pub phase: Phase,
    pub at_ms: u64,
    pub detail: Option<String>,
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl StateStore {
    /// Starts a run; a previous run of the same service and its records are replaced.
    pub fn start_run(&self, run: &Run) -> Result<(), StoreError> {
        let sqlite = self.sqlite();
        self.connection
            .execute_batch("BEGIN")
            .and_then(|()| {
                for table in ["runs", "replicas", "events", "containers"] {
                    self.connection
                        .execute(&format!("DELETE FROM {table} WHERE service_name = ?1"), [&run.service_name])?;
                }
                self.connection.execute(
                    "INSERT INTO runs (service_name, pid, endpoint, health_token, started_at_ms, updated_at_ms,
                         pid_started)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
                    params![
                        run.service_name,
                        run.pid,
                        run.endpoint,
                        run.health_token,
                        int(run.started_at_ms),
                        run.pid_started.map(int)
                    ],
                )?;
                self.connection.execute_batch("COMMIT")
            })
            .map_err(|e| {
                let _ = self.connection.execute_batch("ROLLBACK");
                sqlite(e)
            })
    }

    /// Continues the service's run in a new process (the previous one died): its replicas,
    /// events, containers and usage stay, so billing goes on without a gap or a double.
    pub fn resume_run(&self, run: &Run) -> Result<(), StoreError> {
        self.connection
            .execute(
                "UPDATE runs SET pid = ?2, pid_started = ?3, endpoint = ?4, health_token = ?5, ended_at_ms = NULL
                 WHERE service_name = ?1",
                params![run.service_name, run.pid, run.pid_started.map(int), run.endpoint, run.health_token],
            )
            .map(drop)
            .map_err(self.sqlite())
    }

    pub fn set_serverless(&self, service: &str, endpoint: Option<&Endpoint>) -> Result<(), StoreError> {
        let reference = endpoint.map(|e| serde_json::to_string(e).unwrap_or_default());
        self.connection
            .execute(
                "UPDATE runs SET serverless_url = COALESCE(?2, serverless_url), serverless_ref = ?3
                 WHERE service_name = ?1",
                params![service, endpoint.map(|e| &e.url), reference],
            )
            .map(drop)
            .map_err(self.sqlite())
    }

    pub fn update_usage(
        &self,
        service: &str,
        usage: &Usage,
        note: Option<&str>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.connection
            .execute(
                "UPDATE runs SET arrived = ?2, spot_requests = ?3, serverless_requests = ?4, pure_serverless_ms = ?5,
                     peak_replicas = ?6, desired_replicas = ?7, serverless_running = ?8, note = ?9, updated_at_ms = ?10
                 WHERE service_name = ?1",
                params![
                    service,
                    int(usage.arrived),
                    int(usage.spot_requests),
                    int(usage.serverless_requests),
                    int(usage.pure_serverless_ms),
                    usage.peak_replicas,
                    usage.desired_replicas,
                    usage.serverless_running,
                    note,
                    int(now_ms)
                ],
            )
            .map(drop)
            .map_err(self.sqlite())
    }

    pub fn end_run(&self, service: &str, at_ms: u64) -> Result<(), StoreError> {
        self.connection
            .execute(
                "UPDATE runs SET ended_at_ms = ?2, updated_at_ms = ?2, serverless_running = 0 WHERE service_name = ?1",
                params![service, int(at_ms)],
            )
            .map(drop)
            .map_err(self.sqlite())
    }

    pub fn run(&self, service: &str) -> Result<Option<Run>, StoreError> {
        self.connection
            .query_row(
                "SELECT service_name, pid, endpoint, health_token, started_at_ms, updated_at_ms, ended_at_ms,
                     serverless_url, serverless_ref, arrived, spot_requests, serverless_requests, pure_serverless_ms,
                     peak_replicas, desired_replicas, serverless_running, note, pid_started
                 FROM runs WHERE service_name = ?1",
                [service],
                |row| {
                    Ok(Run {
                        service_name: row.get(0)?,
                        pid: row.get(1)?,
                        endpoint: row.get(2)?,
                        health_token: row.get(3)?,
                        started_at_ms: uint(row.get(4)?),
                        updated_at_ms: uint(row.get(5)?),
                        ended_at_ms: row.get::<_, Option<i64>>(6)?.map(uint),
                        serverless_url: row.get(7)?,
                        serverless: row.get::<_, Option<String>>(8)?.and_then(|j| serde_json::from_str(&j).ok()),
                        usage: Usage {
                            arrived: uint(row.get(9)?),
                            spot_requests: uint(row.get(10)?),
                            serverless_requests: uint(row.get(11)?),
                            pure_serverless_ms: uint(row.get(12)?),
                            peak_replicas: row.get(13)?,
                            desired_replicas: row.get(14)?,
                            serverless_running: row.get(15)?,
                        },
                        note: row.get(16)?,
                        pid_started: row.get::<_, Option<i64>>(17)?.map(uint),
                    })
                },
            )
            .optional()
            .map_err(|error| self.row_error(service, "runs", error))
    }

    /// Moves a replica to `phase` at `at_ms` (creating it on its first phase) and
    /// records the transition as an event.
    pub fn replica_phase(
        &self,
        service: &str,
        replica: &ReplicaRow,
        phase: Phase,
        at_ms: u64,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let ended = phase.is_final().then_some(int(at_ms));
        self.connection
            .execute(
                "INSERT INTO replicas (service_name, replica, url, provider_ref, phase, launched_at_ms, ended_at_ms,
                     detail, placement)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (service_name, replica) DO UPDATE SET
                     phase = IIF(replicas.ended_at_ms IS NULL, excluded.phase, replicas.phase),
                     detail = IIF(replicas.ended_at_ms IS NULL, excluded.detail, replicas.detail),
                     ended_at_ms = COALESCE(replicas.ended_at_ms, excluded.ended_at_ms),
                     url = IIF(excluded.url = '', replicas.url, excluded.url),
                     provider_ref = COALESCE(excluded.provider_ref, replicas.provider_ref),
                     placement = COALESCE(excluded.placement, replicas.placement)",
                params![
                    service,
                    replica.replica,
                    replica.url.as_deref().unwrap_or(""),
                    replica.reference.as_ref().and_then(|r| serde_json::to_string(r).ok()),
                    phase.as_str(),
                    int(replica.launched_at_ms),
                    ended,
                    detail,
                    replica.placement.as_ref().and_then(|p| serde_json::to_string(p).ok())
                ],
            )
            .and_then(|_| {
                self.connection.execute(
                    "INSERT INTO events (service_name, replica, phase, at_ms, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![service, replica.replica, phase.as_str(), int(at_ms), detail],
                )
            })
            .map(drop)
            .map_err(self.sqlite())
    }

    /// Records what the provider said of a replica (its reference and when its billing
    /// started, address, placement) without a lifecycle event.
    pub fn update_replica(&self, service: &str, replica: &ReplicaRow) -> Result<(), StoreError> {
        self.connection
            .execute(
                "UPDATE replicas SET url = IIF(?3 = '', url, ?3), provider_ref = COALESCE(?4, provider_ref),
                     placement = COALESCE(?5, placement), launched_at_ms = ?6
                 WHERE service_name = ?1 AND replica = ?2",
                params![
                    service,
                    replica.replica,
                    replica.url.as_deref().unwrap_or(""),
                    replica.reference.as_ref().and_then(|r| serde_json::to_string(r).ok()),
                    replica.placement.as_ref().and_then(|p| serde_json::to_string(p).ok()),
                    int(replica.launched_at_ms)
                ],
            )
            .map(drop)
            .map_err(self.sqlite())
    }

    pub fn replicas(&self, service: &str) -> Result<Vec<ReplicaRow>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT replica, url, provider_ref, phase, launched_at_ms, ended_at_ms, detail, placement
                 FROM replicas WHERE service_name = ?1 ORDER BY launched_at_ms, replica",
            )
            .map_err(self.sqlite())?;
        let read = |row: &Row<'_>| -> rusqlite::Result<ReplicaRow> {
            let phase: String = row.get(3)?;
            let json = |index: usize| row.get::<_, Option<String>>(index).map(|text| text.filter(|t| !t.is_empty()));
            Ok(ReplicaRow {
                replica: row.get(0)?,
                url: Some(row.get::<_, String>(1)?).filter(|url| !url.is_empty()),
                reference: json(2)?.and_then(|j| serde_json::from_str(&j).ok()),
                phase: Phase::parse(&phase).unwrap_or(Phase::Failed),
                launched_at_ms: uint(row.get(4)?),
                ended_at_ms: row.get::<_, Option<i64>>(5)?.map(uint),
                detail: row.get(6)?,
                placement: json(7)?.and_then(|j| serde_json::from_str(&j).ok()),
            })
        };
        let rows = statement.query_map([service], read).map_err(self.sqlite())?;
        rows.collect::<Result<_, _>>().map_err(|error| self.row_error(service, "replicas", error))
    }

    /// The service's replica events, oldest first.
    pub fn events(&self, service: &str) -> Result<Vec<Event>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT replica, phase, at_ms, detail FROM events WHERE service_name = ?1 ORDER BY id")
            .map_err(self.sqlite())?;
        let read = |row: &Row<'_>| -> rusqlite::Result<Event> {
            let phase: String = row.get(1)?;
            Ok(Event {
                replica: row.get(0)?,
                phase: Phase::parse(&phase).unwrap_or(Phase::Failed),
                at_ms: uint(row.get(2)?),
                detail: row.get(3)?,
            })
        };
        let rows = statement.query_map([service], read).map_err(self.sqlite())?;
        rows.collect::<Result<_, _>>().map_err(|error| self.row_error(service, "events", error))
    }

    /// Records containers as the provider bills them (new ones added, stopped ones closed).
    pub fn save_containers(&self, service: &str, containers: &[ContainerRow]) -> Result<(), StoreError> {
        for c in containers {
            self.connection
                .execute(
                    "INSERT INTO containers (service_name, container, started_at_ms, stopped_at_ms)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (service_name, container) DO UPDATE SET stopped_at_ms = excluded.stopped_at_ms",
                    params![service, int(c.container), int(c.started_at_ms), c.stopped_at_ms.map(int)],
                )
                .map_err(self.sqlite())?;
        }
        Ok(())
    }

    pub fn containers(&self, service: &str) -> Result<Vec<ContainerRow>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT container, started_at_ms, stopped_at_ms FROM containers WHERE service_name = ?1
                 ORDER BY container",
            )
            .map_err(self.sqlite())?;
        let read = |row: &Row<'_>| -> rusqlite::Result<ContainerRow> {
            Ok(ContainerRow {
                container: uint(row.get(0)?),
                started_at_ms: uint(row.get(1)?),
                stopped_at_ms: row.get::<_, Option<i64>>(2)?.map(uint),
            })
        };
        let rows = statement.query_map([service], read).map_err(self.sqlite())?;
        rows.collect::<Result<_, _>>().map_err(|error| self.row_error(service, "containers", error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str) -> Run {
        Run {
            service_name: name.into(),
            pid: 42,
            pid_started: Some(7),
            endpoint: "http://127.0.0.1:8080".into(),
            health_token: Some("health".into()),
            started_at_ms: 1_000,
            updated_at_ms: 1_000,
            ended_at_ms: None,
            serverless_url: None,
            serverless: None,
            usage: Usage::default(),
            note: None,
        }
    }

    #[test]
    fn a_replica_lifecycle_is_recorded_as_events_and_its_billed_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.start_run(&run("svc")).unwrap();
        let replica = ReplicaRow {
            replica: "spot-1".into(),
            url: Some("http://127.0.0.1:9".into()),
            reference: None,
            placement: None,
            phase: Phase::Provisioning,
            launched_at_ms: 2_000,
            ended_at_ms: None,
            detail: None,
        };
        for (phase, at) in [(Phase::Provisioning, 2_000), (Phase::Booting, 2_100), (Phase::Ready, 5_000)] {
            store.replica_phase("svc", &replica, phase, at, None).unwrap();
        }
        store.replica_phase("svc", &replica, Phase::Preempted, 9_000, Some("killed")).unwrap();
        // A late report of a final phase changes nothing: the first end stands.
        store.replica_phase("svc", &replica, Phase::Terminated, 9_500, None).unwrap();
        let rows = store.replicas("svc").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].launched_at_ms, rows[0].ended_at_ms), (2_000, Some(9_000)));
        assert_eq!((rows[0].phase, rows[0].detail.as_deref()), (Phase::Preempted, Some("killed")));
        let phases: Vec<_> = store.events("svc").unwrap().into_iter().map(|e| (e.phase, e.at_ms)).collect();
        assert_eq!(
            phases[..4],
            [(Phase::Provisioning, 2_000), (Phase::Booting, 2_100), (Phase::Ready, 5_000), (Phase::Preempted, 9_000)]
        );
    }

    #[test]
    fn what_the_provider_says_of_a_replica_is_kept_without_an_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.start_run(&run("svc")).unwrap();
        let id = crate::provider::ReplicaId::parse("svc-a-1").unwrap();
        let mut row = ReplicaRow {
            replica: id.to_string(),
            url: None,
            reference: None,
            placement: None,
            phase: Phase::Provisioning,
            launched_at_ms: 2_000,
            ended_at_ms: None,
            detail: None,
        };
        store.replica_phase("svc", &row, Phase::Provisioning, 2_000, None).unwrap();
        // The launch returned: its reference, and when the provider started billing.
        let reference = ReplicaRef { id, launched_ms: 2_345, data: serde_json::json!({"cluster": "svc-a-1"}) };
        row.reference = Some(reference.clone());
        row.launched_at_ms = 2_345;
        row.url = Some("http://10.0.0.5:8000".into());
        store.update_replica("svc", &row).unwrap();
        let stored = &store.replicas("svc").unwrap()[0];
        assert_eq!(stored.reference.as_ref(), Some(&reference));
        assert_eq!((stored.launched_at_ms, stored.url.as_deref()), (2_345, Some("http://10.0.0.5:8000")));
        assert_eq!(store.events("svc").unwrap().len(), 1, "no lifecycle event");
    }

    #[test]
    fn runs_usage_and_containers_round_trip_and_a_new_run_starts_clean() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.start_run(&run("svc")).unwrap();
        let endpoint = Endpoint {
            id: "svc-serverless".into(),
            url: "http://127.0.0.1:10".into(),
            auth: Default::default(),
            data: serde_json::json!({"pid": 8}),
        };
        store.set_serverless("svc", Some(&endpoint)).unwrap();
        let usage = Usage {
            arrived: 10,
            spot_requests: 6,
            serverless_requests: 4,
            pure_serverless_ms: 60_000,
            peak_replicas: 2,
            desired_replicas: 1,
            serverless_running: 1,
        };
        store.update_usage("svc", &usage, Some("relaunch in 2 s"), 5_000).unwrap();
        store
            .save_containers("svc", &[ContainerRow { container: 1, started_at_ms: 1_000, stopped_at_ms: None }])
            .unwrap();
        store
            .save_containers("svc", &[ContainerRow { container: 1, started_at_ms: 1_000, stopped_at_ms: Some(4_000) }])
            .unwrap();
        store.end_run("svc", 6_000).unwrap();
        let got = store.run("svc").unwrap().unwrap();
        assert_eq!(got.usage, Usage { serverless_running: 0, ..usage });
        assert_eq!(
            (got.ended_at_ms, got.serverless, got.note.as_deref()),
            (Some(6_000), Some(endpoint), Some("relaunch in 2 s"))
        );
        assert_eq!(
            store.containers("svc").unwrap(),
            [ContainerRow { container: 1, started_at_ms: 1_000, stopped_at_ms: Some(4_000) }]
        );
        store.start_run(&run("svc")).unwrap();
        assert!(store.containers("svc").unwrap().is_empty());
        assert_eq!(store.run("svc").unwrap().unwrap().ended_at_ms, None);
    }
}
