//! The load generator: closed loops (a number of users, optionally following a
//! profile) and open loops (arrivals from a rate, a profile or a trace), measuring
//! what each request saw. Its own cost stays small: token events are counted, not
//! parsed, and every request is a task on the same runtime.

pub mod report;
pub mod request;
pub mod schedule;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use report::{Report, Summary};
use request::{FailureStage, Outcome, Target};
use schedule::{Profile, Trace};
use tokio::task::JoinSet;

/// How requests are issued.
pub enum Load {
    /// `users` loops, each sending its next request when the last one ends.
    Closed {
        users: u32,
        profile: Option<Profile>,
        duration: Option<Duration>,
        requests: Option<u64>,
        isl: u32,
        osl: u32,
    },
    /// Requests at the trace's times, whether or not earlier ones have finished.
    Open { trace: Trace },
}

impl Load {
    pub fn describe(&self) -> String {
        match self {
            Load::Closed { users, profile: None, .. } => format!("closed loop, {users} users"),
            Load::Closed { users, profile: Some(p), .. } => format!("closed loop, up to {users} users, {p:?} profile"),
            Load::Open { trace } => {
                let span = trace.span().as_secs_f64().max(f64::EPSILON);
                format!("open loop, {} requests over {span:.1} s", trace.entries.len())
            }
        }
    }
}

/// Live counters, for the progress line.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
}

struct Recorder {
    outcomes: Mutex<Vec<Outcome>>,
    progress: Progress,
    started: Instant,
    /// Requests sent before this much time has passed are not measured.
    warmup: Duration,
    warmup_requests: AtomicU64,
}

impl Recorder {
    fn record(&self, sent: Instant, outcome: Outcome) {
        self.progress.done.fetch_add(1, Relaxed);
        if outcome.error.is_some() {
            self.progress.failed.fetch_add(1, Relaxed);
        }
        if sent - self.started < self.warmup {
            self.warmup_requests.fetch_add(1, Relaxed);
            return;
        }
        self.outcomes.lock().expect("no recorder holder panics").push(outcome);
    }
}

/// Runs the load to the end and reports. Requests sent during the first `warmup` (the
/// connection storm at the start) are sent but not measured. `show_progress` prints a
/// live line on stderr when stderr is a terminal.
pub async fn run(target: Target, load: Load, show_progress: bool, warmup: Duration) -> Report {
    let target = Arc::new(target);
    let started = Instant::now();
    let recorder = Arc::new(Recorder {
        outcomes: Mutex::new(Vec::new()),
        progress: Progress::default(),
        started,
        warmup,
        warmup_requests: AtomicU64::new(0),
    });
    let cpu_at_start = process_cpu();
    let ticker = (show_progress && std::io::stderr().is_terminal())
        .then(|| tokio::spawn(progress_line(recorder.clone(), started)));
    let mode = load.describe();
    match load {
        Load::Closed { users, profile, duration, requests, isl, osl } => {
            let plan =
                ClosedLoop { users, profile, deadline: duration.map(|d| started + d), started, duration, isl, osl };
            closed_loop(&target, &recorder, plan, requests).await;
        }
        Load::Open { trace } => open_loop(&target, &recorder, trace, started).await,
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu().zip(cpu_at_start).map(|(end, start)| end.saturating_sub(start));
    if let Some(ticker) = ticker {
        ticker.abort();
        eprintln!();
    }
    let outcomes = std::mem::take(&mut *recorder.outcomes.lock().expect("no recorder holder panics"));
    // Rates count only the measured part of the run.
    let measured = elapsed.saturating_sub(warmup);
    let mut report = summarize(&target, mode, measured, outcomes);
    report.warmup_secs = warmup.as_secs_f64();
    report.warmup_requests = recorder.warmup_requests.load(Relaxed);
    report.client_cpu_percent = cpu.map(|cpu| cpu.as_secs_f64() * 100.0 / elapsed.as_secs_f64().max(f64::EPSILON));
    report
}

/// CPU time this process has used (user plus system), from `/proc/self/stat` on Linux.
/// It tells whether the load generator itself was busy enough to distort timings.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name start at field 3 (state); utime and
    // stime are fields 14 and 15, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

struct ClosedLoop {
    users: u32,
    profile: Option<Profile>,
    deadline: Option<Instant>,
    started: Instant,
    duration: Option<Duration>,
    isl: u32,
    osl: u32,
}

async fn closed_loop(target: &Arc<Target>, recorder: &Arc<Recorder>, plan: ClosedLoop, requests: Option<u64>) {
    let remaining = Arc::new(AtomicU64::new(requests.unwrap_or(u64::MAX)));
    let plan = Arc::new(plan);
    let mut users = JoinSet::new();
    for user in 0..plan.users {
        let (target, recorder, remaining, plan) = (target.clone(), recorder.clone(), remaining.clone(), plan.clone());
        users.spawn(async move {
            loop {
                let now = Instant::now();
                if plan.deadline.is_some_and(|d| now >= d) {
                    break;
                }
                if let (Some(profile), Some(duration)) = (plan.profile, plan.duration) {
                    let progress = (now - plan.started).as_secs_f64() / duration.as_secs_f64();
                    if user >= profile.users(plan.users, progress) {
                        // This user is off in the current phase; look again shortly.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                if remaining.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_err() {
                    break;
                }
                recorder.progress.sent.fetch_add(1, Relaxed);
                let sent = Instant::now();
                let outcome = target.send(plan.isl, plan.osl).await;
                recorder.record(sent, outcome);
            }
        });
    }
    while users.join_next().await.is_some() {}
}

async fn open_loop(target: &Arc<Target>, recorder: &Arc<Recorder>, trace: Trace, started: Instant) {
    let mut in_flight = JoinSet::new();
    for entry in trace.entries {
        tokio::time::sleep_until((started + Duration::from_millis(entry.timestamp)).into()).await;
        while in_flight.try_join_next().is_some() {}
        let (target, recorder) = (target.clone(), recorder.clone());
        recorder.progress.sent.fetch_add(1, Relaxed);
        in_flight.spawn(async move {
            let sent = Instant::now();
            let outcome = target.send(entry.input_length, entry.output_length).await;
            recorder.record(sent, outcome);
        });
    }
    while in_flight.join_next().await.is_some() {}
}

async fn progress_line(recorder: Arc<Recorder>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let p = &recorder.progress;
        let (sent, done, failed) = (p.sent.load(Relaxed), p.done.load(Relaxed), p.failed.load(Relaxed));
        let elapsed = started.elapsed().as_secs_f64();
        eprint!(
            "\r[{elapsed:7.1} s] sent {sent}  done {done}  in flight {}  failed {failed}  {:.1} req/s   ",
            sent.saturating_sub(done),
            done as f64 / elapsed.max(f64::EPSILON)
        );
    }
}

fn summarize(target: &Target, mode: String, elapsed: Duration, outcomes: Vec<Outcome>) -> Report {
    let mut errors = BTreeMap::new();
    let mut stages = BTreeMap::new();
    let mut failures = BTreeMap::new();
    let mut backends = BTreeMap::new();
    let mut tiers = BTreeMap::new();
    let (mut ttft, mut gaps, mut latency) = (Vec::new(), Vec::new(), Vec::new());
    let mut output_tokens = 0;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for outcome in &outcomes {
        if let Some(kind) = &outcome.error {
            *errors.entry(kind.clone()).or_insert(0) += 1;
            let stage = outcome.stage.map_or("unknown", FailureStage::as_str);
            *stages.entry(stage.to_string()).or_insert(0) += 1;
            let reason = outcome.router_error.as_deref().map_or(String::new(), |r| format!(" {r}"));
            *failures.entry(format!("{stage} {kind}{reason}")).or_insert(0) += 1;
            continue;
        }
        if let Some(backend) = &outcome.backend {
            *backends.entry(backend.clone()).or_insert(0) += 1;
            let tier = backend.split('/').next().unwrap_or(backend);
            *tiers.entry(tier.to_string()).or_insert(0) += 1;
        }
        ttft.extend(outcome.ttft.map(ms));
        gaps.extend(outcome.gaps_us.iter().map(|&us| f64::from(us) / 1000.0));
        latency.push(ms(outcome.latency));
        output_tokens += outcome.output_tokens;
    }
    let failed: u64 = errors.values().sum();
    let requests = outcomes.len() as u64;
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    Report {
        url: target.url.clone(),
        mode,
        streaming: target.stream,
        duration_secs: elapsed.as_secs_f64(),
        requests,
        succeeded: requests - failed,
        failed,
        errors,
        stages,
        failures,
        requests_per_sec: (requests - failed) as f64 / secs,
        output_tokens,
        output_tokens_per_sec: output_tokens as f64 / secs,
        ttft_ms: Summary::of(ttft),
        itl_ms: Summary::of(gaps),
        latency_ms: Summary::of(latency),
        backends,
        tiers,
        client_cpu_percent: None,
        warmup_secs: 0.0,
        warmup_requests: 0,
    }
}
