//! `tick` itself, driven by scripted providers under paused tokio time: what the loop
//! launches, publishes and records, and that no provider call can hold it up.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tandemn_config::api::LoadSnapshot;
use tandemn_config::{Catalog, Sources};

use super::*;
use crate::provider::{EndpointStatus, Listed};

/// A cloud whose replicas do what the test says.
#[derive(Default)]
struct ScriptedSpot {
    state: Mutex<SpotState>,
}

#[derive(Default)]
struct SpotState {
    /// What `status` answers per replica (absent: NotFound).
    status: HashMap<String, ReplicaStatus>,
    launches: Vec<String>,
    terminations: Vec<String>,
    /// Launches that never return (a cloud that does not answer).
    hang_launches: bool,
    /// Terminations that fail before one succeeds.
    failing_terminations: u32,
    /// Status calls and terminations that never return.
    hang_status: bool,
    hang_terminations: bool,
    /// `list` fails (the cloud's API is down).
    list_fails: bool,
    listed: Vec<Listed>,
}

impl ScriptedSpot {
    fn with<T>(&self, f: impl FnOnce(&mut SpotState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

#[async_trait]
impl SpotProvider for ScriptedSpot {
    async fn launch(&self, spec: &ReplicaSpec) -> Result<ReplicaRef, ProviderError> {
        if self.with(|s| s.hang_launches) {
            std::future::pending::<()>().await;
        }
        self.with(|s| {
            s.launches.push(spec.id.to_string());
            s.status.insert(spec.id.to_string(), ReplicaStatus::Pending);
        });
        Ok(ReplicaRef { id: spec.id.clone(), launched_ms: START_MS, data: serde_json::json!({"cluster": spec.id}) })
    }

    async fn status(&self, replica: &ReplicaRef) -> Result<ReplicaStatus, ProviderError> {
        if self.with(|s| s.hang_status) {
            std::future::pending::<()>().await;
        }
        Ok(self.with(|s| s.status.get(replica.id.as_str()).cloned().unwrap_or(ReplicaStatus::NotFound)))
    }

    async fn terminate(&self, replica: &ReplicaRef) -> Result<u64, ProviderError> {
        if self.with(|s| s.hang_terminations) {
            std::future::pending::<()>().await;
        }
        self.with(|s| {
            if s.failing_terminations > 0 {
                s.failing_terminations -= 1;
                return Err(ProviderError::transient("the cloud is busy"));
            }
            s.terminations.push(replica.id.to_string());
            s.status.remove(replica.id.as_str());
            Ok(7_777)
        })
    }

    async fn list(&self, _service: &str) -> Result<Vec<Listed>, ProviderError> {
        if self.with(|s| s.list_fails) {
            return Err(ProviderError::transient("the cloud's API is down"));
        }
        Ok(self.with(|s| s.listed.clone()))
    }
}

#[derive(Default)]
struct ScriptedServerless {
    deploys: Mutex<u32>,
}

#[async_trait]
impl ServerlessProvider for ScriptedServerless {
    async fn deploy(&self, spec: &ServerlessSpec) -> Result<Endpoint, ProviderError> {
        *self.deploys.lock().unwrap() += 1;
        Ok(Endpoint {
            id: format!("{}-serverless", spec.service),
            url: "https://serverless.example".into(),
            auth: BackendAuth::Bearer { token: tandemn_config::api::Secret::new("sv-token") },
            data: serde_json::Value::Null,
        })
    }

    async fn status(&self, _endpoint: &Endpoint) -> Result<EndpointStatus, ProviderError> {
        Ok(EndpointStatus::default())
    }

    async fn destroy(&self, _endpoint: &Endpoint) -> Result<Vec<ContainerBill>, ProviderError> {
        Ok(Vec::new())
    }

    async fn list(&self, _service: &str) -> Result<Vec<Endpoint>, ProviderError> {
        Ok(Vec::new())
    }
}

#[derive(Default)]
struct Router {
    published: Mutex<Vec<Vec<BackendSpec>>>,
    load: Mutex<LoadSnapshot>,
}

impl RouteSink for Router {
    fn publish(&self, backends: &[BackendSpec]) -> Result<(), String> {
        self.published.lock().unwrap().push(backends.to_vec());
        Ok(())
    }
}

impl LoadSource for Router {
    fn snapshot(&self) -> LoadSnapshot {
        self.load.lock().unwrap().clone()
    }
}

impl Router {
    fn last(&self) -> Vec<BackendSpec> {
        self.published.lock().unwrap().last().cloned().unwrap_or_default()
    }
}

/// Every engine is ready as soon as it runs.
struct AlwaysReady;

#[async_trait]
impl Readiness for AlwaysReady {
    async fn ready(&self, _url: &str) -> bool {
        true
    }
}

struct Harness {
    spot: Arc<ScriptedSpot>,
    serverless: Arc<ScriptedServerless>,
    router: Arc<Router>,
    store: StateStore,
    _dir: tempfile::TempDir,
}

const START_MS: u64 = 1_764_000_000_000;

fn harness(min_replicas: u32) -> (Harness, Reconciler) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "service_name: svc\nmodel: m\ngpu: L4\nspots_cloud: local\nserverless_provider: local\n\
         scaling: {{spot: {{min_replicas: {min_replicas}, max_replicas: 3}}}}\n"
    );
    let spec = Sources::stored(&yaml, Catalog::embedded()).unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    store.save_deployment(&spec, crate::DeploymentStatus::Active).unwrap();
    store
        .start_run(&crate::state_store::Run {
            service_name: "svc".into(),
            pid: std::process::id(),
            pid_started: None,
            endpoint: String::new(),
            health_token: None,
            started_at_ms: START_MS,
            updated_at_ms: START_MS,
            ended_at_ms: None,
            serverless_url: None,
            serverless: None,
            usage: Usage::default(),
            note: None,
        })
        .unwrap();
    let h = Harness {
        spot: Arc::default(),
        serverless: Arc::default(),
        router: Arc::default(),
        store: StateStore::open(dir.path()).unwrap(),
        _dir: dir,
    };
    let timing = Timing { call_timeout: Duration::from_secs(30), retry: Duration::from_secs(5), ..Timing::default() };
    let reconciler = Reconciler::new(
        spec,
        h.spot.clone(),
        h.serverless.clone(),
        h.router.clone(),
        h.router.clone(),
        store,
        timing,
        Clock::tokio(START_MS),
    )
    .with_readiness(Arc::new(AlwaysReady));
    (h, reconciler)
}

/// Ticks `n` times, half a second apart, letting spawned calls run in between.
async fn ticks(reconciler: &mut Reconciler, n: u32) {
    for _ in 0..n {
        reconciler.tick().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Resumes (nothing to adopt), lets the first replica launch and run, and returns its
/// name once it is ready.
async fn ready_replica(h: &Harness, reconciler: &mut Reconciler) -> String {
    reconciler.resume().await;
    ticks(reconciler, 2).await;
    let id = h.spot.with(|s| s.launches[0].clone());
    h.spot.with(|s| {
        s.status.insert(id.clone(), ReplicaStatus::Running { url: "http://10.0.0.5:8000".into(), placement: None })
    });
    ticks(reconciler, 4).await;
    assert_eq!(phases(&h.store), [(id.clone(), Phase::Ready)]);
    id
}

fn phases(store: &StateStore) -> Vec<(String, Phase)> {
    store.replicas("svc").unwrap().into_iter().map(|r| (r.replica, r.phase)).collect()
}

#[tokio::test(start_paused = true)]
async fn serverless_serves_first_then_the_spot_replica_takes_over_once_it_runs() {
    let (h, mut reconciler) = harness(1);
    reconciler.resume().await;
    ticks(&mut reconciler, 2).await;
    let first = h.router.last();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].tier, Tier::Serverless);
    assert_eq!(first[0].id.as_ref().map(BackendId::as_str), Some("serverless/svc-serverless"));
    assert!(matches!(first[0].auth, BackendAuth::Bearer { .. }), "the endpoint's credentials reach the router");

    let launched = h.spot.with(|s| s.launches.clone());
    assert_eq!(launched.len(), 1);
    let id = launched[0].clone();
    assert!(id.starts_with("svc-") && ReplicaId::parse(&id).is_ok(), "{id}");
    assert_eq!(phases(&h.store), [(id.clone(), Phase::Provisioning)], "recorded before it runs");
    let row = &h.store.replicas("svc").unwrap()[0];
    assert_eq!(row.reference.as_ref().unwrap().data["cluster"], id.as_str(), "the provider reference is stored");

    ticks(&mut reconciler, 4).await;
    assert_eq!(h.router.last().len(), 1, "a pending replica has no address and gets no traffic");
    let placement = Placement { instance_type: "g6.xlarge".into(), region: "us-east-2".into(), spot: true };
    h.spot.with(|s| {
        s.status.insert(
            id.clone(),
            ReplicaStatus::Running { url: "http://10.0.0.5:8000".into(), placement: Some(placement.clone()) },
        )
    });
    ticks(&mut reconciler, 4).await;
    let spot: Vec<_> = h.router.last().into_iter().filter(|b| b.tier == Tier::Spot).collect();
    assert_eq!(spot.len(), 1);
    assert_eq!(spot[0].id.as_ref().map(BackendId::as_str), Some(format!("spot/{id}").as_str()));
    assert_eq!(spot[0].url, "http://10.0.0.5:8000");
    assert_eq!(phases(&h.store), [(id.clone(), Phase::Ready)]);
    assert_eq!(h.store.replicas("svc").unwrap()[0].placement, Some(placement));
    assert_eq!(h.spot.with(|s| s.launches.len()), 1, "one launch for one replica");
}

#[tokio::test(start_paused = true)]
async fn a_cloud_that_does_not_answer_never_holds_up_a_tick() {
    let (h, mut reconciler) = harness(1);
    h.spot.with(|s| s.hang_launches = true);
    reconciler.resume().await;
    for _ in 0..10 {
        // A tick finishes without tokio time passing: the hung launch runs beside it.
        let began = tokio::time::Instant::now();
        reconciler.tick().await;
        assert_eq!(began.elapsed(), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(h.router.last().len(), 1, "serverless is published while the launch hangs");
    // Past the call's deadline the launch counts as failed, and since it may have created
    // something, the replica is terminated (its record says so meanwhile).
    h.spot.with(|s| s.hang_launches = false);
    ticks(&mut reconciler, 60).await;
    let rows = h.store.replicas("svc").unwrap();
    let first = &rows[0];
    assert_eq!(first.phase, Phase::Failed, "{rows:?}");
    assert!(first.detail.as_deref().unwrap().contains("did not answer"), "{first:?}");
    assert!(h.spot.with(|s| s.terminations.contains(&first.replica)));
}

#[tokio::test(start_paused = true)]
async fn a_preempted_replica_is_replaced_under_a_new_name_and_its_resource_removed() {
    let (h, mut reconciler) = harness(1);
    let id = ready_replica(&h, &mut reconciler).await;
    h.spot.with(|s| s.status.insert(id.clone(), ReplicaStatus::Preempted { at_ms: START_MS + 3_000 }));
    ticks(&mut reconciler, 10).await;
    let rows = h.store.replicas("svc").unwrap();
    assert_eq!((rows[0].phase, rows[0].ended_at_ms), (Phase::Preempted, Some(START_MS + 3_000)));
    let launches = h.spot.with(|s| s.launches.clone());
    assert_eq!(launches.len(), 2, "replaced after the backoff");
    assert_ne!(launches[0], launches[1]);
    assert!(h.spot.with(|s| s.terminations.contains(&id)), "the preempted cluster is removed too");
    assert!(h.router.last().iter().all(|b| b.tier == Tier::Serverless), "the preempted replica left the table");
}

#[tokio::test(start_paused = true)]
async fn a_terminate_that_fails_is_retried_and_shown_terminating_until_it_succeeds() {
    let (h, mut reconciler) = harness(1);
    reconciler.resume().await;
    ticks(&mut reconciler, 2).await;
    let id = h.spot.with(|s| s.launches[0].clone());
    h.spot.with(|s| {
        s.status.insert(id.clone(), ReplicaStatus::Failed { at_ms: START_MS, reason: "engine crashed".into() })
    });
    h.spot.with(|s| s.failing_terminations = 2);
    ticks(&mut reconciler, 3).await;
    assert_eq!(phases(&h.store)[0], (id.clone(), Phase::Terminating));
    assert!(h.spot.with(|s| s.terminations.is_empty()));
    // Retried every `retry` (5 s): the third attempt succeeds.
    ticks(&mut reconciler, 30).await;
    let rows = h.store.replicas("svc").unwrap();
    assert_eq!((rows[0].phase, rows[0].ended_at_ms), (Phase::Failed, Some(7_777)), "billed until it stopped");
    assert!(rows[0].detail.as_deref().unwrap().contains("engine crashed"));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_loop_adopts_what_runs_finishes_terminations_and_launches_nothing_twice() {
    let (h, mut reconciler) = harness(1);
    let running = ready_replica(&h, &mut reconciler).await;
    // The process dies here (the reconciler is dropped without a teardown). Meanwhile a
    // second replica was being terminated, and a third never got past its launch call.
    drop(reconciler);
    let row = |name: &str, phase, data: serde_json::Value| ReplicaRow {
        replica: name.into(),
        url: None,
        reference: Some(ReplicaRef { id: ReplicaId::parse(name).unwrap(), launched_ms: START_MS, data }),
        placement: None,
        phase,
        launched_at_ms: START_MS,
        ended_at_ms: None,
        detail: None,
    };
    let stopping = format!("{}-8", running.rsplit_once('-').unwrap().0);
    let unborn = format!("{}-9", running.rsplit_once('-').unwrap().0);
    h.store
        .replica_phase(
            "svc",
            &row(&stopping, Phase::Terminating, serde_json::json!({"cluster": 1})),
            Phase::Terminating,
            START_MS,
            None,
        )
        .unwrap();
    h.store
        .replica_phase(
            "svc",
            &row(&unborn, Phase::Provisioning, serde_json::Value::Null),
            Phase::Provisioning,
            START_MS,
            None,
        )
        .unwrap();
    let listed = |name: &str| Listed {
        id: ReplicaId::parse(name).unwrap(),
        reference: ReplicaRef {
            id: ReplicaId::parse(name).unwrap(),
            launched_ms: START_MS,
            data: serde_json::json!({"cluster": name}),
        },
    };
    h.spot.with(|s| {
        s.listed = vec![listed(&running), listed(&stopping)];
        s.status
            .insert(stopping.clone(), ReplicaStatus::Running { url: "http://10.0.0.6:8000".into(), placement: None });
    });

    let mut restarted = restarted(&h);
    restarted.resume().await;
    ticks(&mut restarted, 6).await;
    assert_eq!(h.spot.with(|s| s.launches.len()), 1, "the running replica is adopted, not launched again");
    let rows: HashMap<String, ReplicaRow> =
        h.store.replicas("svc").unwrap().into_iter().map(|r| (r.replica.clone(), r)).collect();
    assert_eq!(rows[&running].phase, Phase::Ready);
    assert_eq!(rows[&running].launched_at_ms, START_MS, "billing continues from the first launch");
    assert_eq!(rows[&stopping].phase, Phase::Terminated, "the termination under way finished");
    assert_eq!(
        (rows[&unborn].phase, rows[&unborn].ended_at_ms),
        (Phase::Failed, Some(START_MS)),
        "never created: not billed"
    );
    let spot: Vec<_> = h.router.last().into_iter().filter(|b| b.tier == Tier::Spot).collect();
    assert_eq!(spot.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_second_signal_ends_the_teardown_at_once_while_the_cloud_hangs() {
    let (h, mut reconciler) = harness(1);
    let id = ready_replica(&h, &mut reconciler).await;
    // The cloud stops answering: a status call hangs when the stop comes, and so does
    // every terminate after it.
    h.spot.with(|s| (s.hang_status, s.hang_terminations) = (true, true));
    ticks(&mut reconciler, 2).await;
    let began = tokio::time::Instant::now();
    reconciler.teardown(tokio::time::sleep(Duration::from_secs(3))).await;
    // Not the call deadline (30 s) three times over: calls get 5 s after the second signal.
    assert!(began.elapsed() <= Duration::from_secs(9), "the teardown took {:?}", began.elapsed());
    assert_eq!(phases(&h.store), [(id, Phase::Terminating)], "what did not stop stays recorded");
    assert!(h.store.run("svc").unwrap().unwrap().ended_at_ms.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_resume_that_cannot_list_keeps_a_replica_whose_launch_never_returned() {
    let (h, mut reconciler) = harness(1);
    // The process dies after the replica's row was written and its launch sent, before
    // the launch returned a reference; at the restart the cloud's list fails.
    h.spot.with(|s| s.hang_launches = true);
    reconciler.resume().await;
    ticks(&mut reconciler, 2).await;
    drop(reconciler);
    let rows = h.store.replicas("svc").unwrap();
    assert_eq!(rows.len(), 1);
    let name = rows[0].replica.clone();
    assert!(rows[0].reference.as_ref().is_none_or(|r| r.data.is_null()), "{rows:?}");
    h.spot.with(|s| {
        s.hang_launches = false;
        s.list_fails = true;
        s.status.insert(name.clone(), ReplicaStatus::Running { url: "http://10.0.0.5:8000".into(), placement: None });
    });
    let mut restarted = restarted(&h);
    restarted.resume().await;
    ticks(&mut restarted, 6).await;
    // Not known to be gone, so not forgotten: asked about by name, and it runs.
    assert_eq!(phases(&h.store), [(name, Phase::Ready)]);
    assert!(h.spot.with(|s| s.launches.is_empty()), "no second cluster is launched beside it");
}

#[tokio::test(start_paused = true)]
async fn a_replica_preempted_while_no_process_watched_is_billed_until_it_was_last_seen() {
    let (h, mut reconciler) = harness(1);
    let id = ready_replica(&h, &mut reconciler).await;
    let last_seen = h.store.run("svc").unwrap().unwrap().updated_at_ms;
    drop(reconciler);
    // Reclaimed while tandemn was down; the cloud's list still shows it, and its status
    // says so only now (SkyPilot cannot date a cluster that vanished).
    let listed = Listed {
        id: ReplicaId::parse(&id).unwrap(),
        reference: ReplicaRef {
            id: ReplicaId::parse(&id).unwrap(),
            launched_ms: START_MS,
            data: serde_json::json!({}),
        },
    };
    h.spot.with(|s| {
        s.listed = vec![listed];
        s.status.insert(id.clone(), ReplicaStatus::Preempted { at_ms: START_MS + 60_000 });
    });
    let mut restarted = restarted(&h);
    restarted.resume().await;
    ticks(&mut restarted, 4).await;
    let row = h.store.replicas("svc").unwrap().into_iter().find(|r| r.replica == id).unwrap();
    assert_eq!((row.phase, row.ended_at_ms), (Phase::Preempted, Some(last_seen)), "not the minute nobody watched");
}

#[tokio::test(start_paused = true)]
async fn the_teardown_removes_a_preempted_cluster_whose_cleanup_failed() {
    let (h, mut reconciler) = harness(1);
    let id = ready_replica(&h, &mut reconciler).await;
    // Stopped, not terminated: its resource still costs, and removing it fails once.
    h.spot.with(|s| {
        s.status.insert(id.clone(), ReplicaStatus::Preempted { at_ms: START_MS + 3_000 });
        s.failing_terminations = 1;
    });
    ticks(&mut reconciler, 2).await;
    assert!(h.spot.with(|s| !s.terminations.contains(&id)));
    let stopped = ReplicaId::parse(&id).unwrap();
    h.spot.with(|s| {
        s.listed = vec![Listed {
            id: stopped.clone(),
            reference: ReplicaRef { id: stopped.clone(), launched_ms: START_MS, data: serde_json::json!({}) },
        }]
    });
    reconciler.teardown(std::future::pending()).await;
    assert!(h.spot.with(|s| s.terminations.contains(&id)), "what the provider still lists is removed at the end");
}

/// A second loop on the same store and providers: a restarted process.
fn restarted(h: &Harness) -> Reconciler {
    let spec = Sources::stored(
        "service_name: svc\nmodel: m\ngpu: L4\nspots_cloud: local\nserverless_provider: local\n\
         scaling: {spot: {min_replicas: 1, max_replicas: 3}}\n",
        Catalog::embedded(),
    )
    .unwrap();
    let store = StateStore::open(h.store.path().parent().unwrap()).unwrap();
    Reconciler::new(
        spec,
        h.spot.clone(),
        h.serverless.clone(),
        h.router.clone(),
        h.router.clone(),
        store,
        Timing::default(),
        Clock::tokio(START_MS + 60_000),
    )
    .with_readiness(Arc::new(AlwaysReady))
}
