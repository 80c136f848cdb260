//! When requests go out: the predecessor's traffic profiles (user counts for closed
//! loops, phase rate tables for open loops), Poisson or constant arrivals, and JSONL
//! traces (`{"timestamp": ms, "input_length": n, "output_length": n}`).

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A traffic shape over the run, as fractions of its duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Flat,
    Ramp,
    Spike,
    DayCycle,
}

/// One stretch of an open-loop profile: `rps` requests per second from `start` to `end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    pub name: &'static str,
    pub start: f64,
    pub end: f64,
    pub rps: f64,
}

const fn phase(name: &'static str, start: f64, end: f64, rps: f64) -> Phase {
    Phase { name, start, end, rps }
}

/// The predecessor's trace-generator tables; gaps of zero traffic are kept on purpose
/// (each is longer than a typical spot `downscale_delay`).
const DAY_CYCLE: &[Phase] = &[
    phase("ramp", 0.00, 0.10, 0.5),
    phase("peak", 0.10, 0.25, 3.0),
    phase("wind-down-1", 0.25, 0.30, 1.0),
    phase("gap-1", 0.30, 0.35, 0.0),
    phase("recovery-1", 0.35, 0.37, 1.0),
    phase("steady-1", 0.37, 0.50, 2.0),
    phase("spike", 0.50, 0.58, 3.0),
    phase("wind-down-2", 0.58, 0.63, 1.0),
    phase("gap-2", 0.63, 0.68, 0.0),
    phase("recovery-2", 0.68, 0.70, 1.0),
    phase("steady-2", 0.70, 0.85, 2.0),
    phase("wind-down-3", 0.85, 0.90, 1.0),
    phase("gap-3", 0.90, 0.95, 0.0),
    phase("trickle", 0.95, 1.00, 0.3),
];
const FLAT: &[Phase] = &[phase("flat", 0.0, 1.0, 3.0)];
const SPIKE: &[Phase] = &[
    phase("baseline", 0.00, 0.18, 0.3),
    phase("spike-1", 0.18, 0.22, 5.0),
    phase("baseline", 0.22, 0.38, 0.3),
    phase("spike-2", 0.38, 0.42, 5.0),
    phase("baseline", 0.42, 0.58, 0.3),
    phase("spike-3", 0.58, 0.62, 5.0),
    phase("baseline", 0.62, 0.78, 0.3),
    phase("spike-4", 0.78, 0.82, 5.0),
    phase("baseline", 0.82, 1.00, 0.3),
];
/// Open-loop ramp: ten equal steps up to the peak (the predecessor ramped users only).
const RAMP: &[Phase] = &[
    phase("ramp-1", 0.0, 0.1, 0.3),
    phase("ramp-2", 0.1, 0.2, 0.6),
    phase("ramp-3", 0.2, 0.3, 0.9),
    phase("ramp-4", 0.3, 0.4, 1.2),
    phase("ramp-5", 0.4, 0.5, 1.5),
    phase("ramp-6", 0.5, 0.6, 1.8),
    phase("ramp-7", 0.6, 0.7, 2.1),
    phase("ramp-8", 0.7, 0.8, 2.4),
    phase("ramp-9", 0.8, 0.9, 2.7),
    phase("ramp-10", 0.9, 1.0, 3.0),
];

impl Profile {
    pub fn phases(self) -> &'static [Phase] {
        match self {
            Profile::Flat => FLAT,
            Profile::Ramp => RAMP,
            Profile::Spike => SPIKE,
            Profile::DayCycle => DAY_CYCLE,
        }
    }

    pub fn peak_rps(self) -> f64 {
        self.phases().iter().map(|p| p.rps).fold(0.0, f64::max)
    }

    /// Closed-loop users at `progress` (0..1) of the run, for at most `max` users;
    /// the predecessor's built-in engine table, zero-user gaps included.
    pub fn users(self, max: u32, progress: f64) -> u32 {
        let max_f = f64::from(max);
        let lerp = |from: f64, to: f64, start: f64, end: f64| from + (to - from) * (progress - start) / (end - start);
        let users = match self {
            Profile::Flat => max_f,
            Profile::Ramp => (max_f * progress).round().max(1.0),
            Profile::Spike => {
                let baseline = f64::from((max / 10).max(1));
                let spiking = [0.2, 0.4, 0.6, 0.8].iter().any(|c| (progress - c).abs() <= 0.025);
                if spiking { (baseline * 10.0).min(max_f) } else { baseline }
            }
            Profile::DayCycle => {
                let seventy = 0.7 * max_f;
                let (value, gap) = match progress {
                    p if p < 0.10 => (lerp(1.0, max_f, 0.0, 0.10), false),
                    p if p < 0.25 => (max_f, false),
                    p if p < 0.30 => (lerp(max_f, 0.0, 0.25, 0.30), false),
                    p if p < 0.35 => (0.0, true),
                    p if p < 0.37 => (lerp(0.0, seventy, 0.35, 0.37), false),
                    p if p < 0.50 => (seventy, false),
                    p if p < 0.58 => (max_f, false),
                    p if p < 0.63 => (lerp(max_f, 0.0, 0.58, 0.63), false),
                    p if p < 0.68 => (0.0, true),
                    p if p < 0.70 => (lerp(0.0, seventy, 0.68, 0.70), false),
                    p if p < 0.85 => (seventy, false),
                    p if p < 0.90 => (lerp(seventy, 0.0, 0.85, 0.90), false),
                    p if p < 0.95 => (0.0, true),
                    _ => (0.2 * max_f, false),
                };
                if gap { 0.0 } else { value.round().max(1.0) }
            }
        };
        users as u32
    }
}

/// How arrivals are spaced at a given rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrival {
    Poisson,
    Constant,
}

/// One planned request: when it goes out (from the start) and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceEntry {
    /// Milliseconds from the start of the run.
    pub timestamp: u64,
    pub input_length: u32,
    pub output_length: u32,
}

/// Planned requests, sorted by time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    pub entries: Vec<TraceEntry>,
}

impl Trace {
    /// Reads JSONL; an error names the line.
    pub fn read(path: &Path) -> Result<Self, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut entries = Vec::new();
        for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| format!("{}:{}: {e}", path.display(), index + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let entry: TraceEntry =
                serde_json::from_str(&line).map_err(|e| format!("{}:{}: {e}", path.display(), index + 1))?;
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(format!("{}: the trace has no requests", path.display()));
        }
        entries.sort_by_key(|e| e.timestamp);
        Ok(Self { entries })
    }

    /// Arrivals at the profile's rates over `duration`, scaled so the busiest phase
    /// runs at `peak_rps` (the table's own peak when `None`). Lengths are normal
    /// around `isl`/`osl` (σ 50 and 30), floored at 10 and 5, as the predecessor drew them.
    pub fn from_profile(
        profile: Profile,
        duration: Duration,
        peak_rps: Option<f64>,
        isl: u32,
        osl: u32,
        seed: u64,
    ) -> Self {
        let scale = peak_rps.map_or(1.0, |peak| peak / profile.peak_rps());
        let mut rng = StdRng::seed_from_u64(seed);
        let total = duration.as_secs_f64();
        let mut entries = Vec::new();
        for phase in profile.phases().iter().filter(|p| p.rps > 0.0) {
            let (start, end) = (phase.start * total, phase.end * total);
            let mut at = start;
            loop {
                at += exponential(&mut rng, phase.rps * scale);
                if at >= end {
                    break;
                }
                entries.push(entry(&mut rng, at, isl, osl));
            }
        }
        Self { entries }
    }

    /// A steady rate for `duration` (or `count` requests, whichever ends first).
    pub fn at_rate(
        rps: f64,
        arrival: Arrival,
        duration: Option<Duration>,
        count: Option<u64>,
        isl: u32,
        osl: u32,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let limit = duration.map_or(f64::INFINITY, |d| d.as_secs_f64());
        let count = count.unwrap_or(u64::MAX);
        let mut entries = Vec::new();
        let mut at = 0.0;
        while (entries.len() as u64) < count {
            at = match arrival {
                Arrival::Poisson => at + exponential(&mut rng, rps),
                // Computed from the index, not accumulated, so it never drifts.
                Arrival::Constant => entries.len() as f64 / rps,
            };
            if at >= limit {
                break;
            }
            let timestamp = (at * 1000.0).round() as u64;
            entries.push(TraceEntry { timestamp, input_length: isl, output_length: osl });
        }
        Self { entries }
    }

    /// Replays `factor` times faster: timestamps are divided by it.
    pub fn time_scaled(mut self, factor: f64) -> Self {
        for entry in &mut self.entries {
            entry.timestamp = (entry.timestamp as f64 / factor) as u64;
        }
        self
    }

    pub fn span(&self) -> Duration {
        Duration::from_millis(self.entries.last().map_or(0, |e| e.timestamp))
    }
}

fn exponential(rng: &mut StdRng, rate: f64) -> f64 {
    -(1.0 - rng.random::<f64>()).ln() / rate
}

fn normal(rng: &mut StdRng, mean: f64, deviation: f64) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
    mean + deviation * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn entry(rng: &mut StdRng, at_secs: f64, isl: u32, osl: u32) -> TraceEntry {
    TraceEntry {
        timestamp: (at_secs * 1000.0) as u64,
        input_length: normal(rng, f64::from(isl), 50.0).max(10.0) as u32,
        output_length: normal(rng, f64::from(osl), 30.0).max(5.0) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_tables_cover_the_run_without_holes() {
        for profile in [Profile::Flat, Profile::Ramp, Profile::Spike, Profile::DayCycle] {
            let phases = profile.phases();
            assert_eq!(phases[0].start, 0.0);
            assert_eq!(phases.last().unwrap().end, 1.0);
            for pair in phases.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "{profile:?}");
            }
        }
        let gaps: Vec<&str> = DAY_CYCLE.iter().filter(|p| p.rps == 0.0).map(|p| p.name).collect();
        assert_eq!(gaps, ["gap-1", "gap-2", "gap-3"]);
    }

    #[test]
    fn day_cycle_users_follow_the_predecessor_table() {
        let users = |p| Profile::DayCycle.users(10, p);
        assert_eq!(users(0.0), 1);
        assert_eq!(users(0.05), 6);
        assert_eq!(users(0.2), 10);
        assert_eq!(users(0.32), 0, "gap-1 has no users");
        assert_eq!(users(0.4), 7);
        assert_eq!(users(0.55), 10);
        assert_eq!(users(0.65), 0);
        assert_eq!(users(0.92), 0);
        assert_eq!(users(0.97), 2);
        assert_eq!(Profile::Spike.users(50, 0.41), 50);
        assert_eq!(Profile::Spike.users(50, 0.3), 5);
        assert_eq!(Profile::Ramp.users(8, 0.5), 4);
        assert_eq!(Profile::Ramp.users(8, 0.0), 1);
        assert_eq!(Profile::Flat.users(8, 0.99), 8);
    }

    #[test]
    fn generated_traces_respect_rates_and_gaps() {
        let duration = Duration::from_secs(2000);
        let trace = Trace::from_profile(Profile::DayCycle, duration, None, 550, 150, 42);
        let expected: f64 = DAY_CYCLE.iter().map(|p| p.rps * (p.end - p.start) * 2000.0).sum();
        let count = trace.entries.len() as f64;
        assert!((count - expected).abs() < expected * 0.1, "{count} vs {expected}");
        for gap in DAY_CYCLE.iter().filter(|p| p.rps == 0.0) {
            let (start, end) = ((gap.start * 2e6) as u64, (gap.end * 2e6) as u64);
            assert!(
                !trace.entries.iter().any(|e| e.timestamp >= start && e.timestamp < end),
                "{} has traffic",
                gap.name
            );
        }
        assert!(trace.entries.iter().all(|e| e.input_length >= 10 && e.output_length >= 5));
        assert_eq!(trace, Trace::from_profile(Profile::DayCycle, duration, None, 550, 150, 42), "seeded");

        let scaled = Trace::from_profile(Profile::Flat, Duration::from_secs(100), Some(30.0), 10, 10, 1);
        assert!((scaled.entries.len() as f64 - 3000.0).abs() < 300.0, "peak scaled to 30 rps");
    }

    #[test]
    fn steady_rates_and_time_scaling() {
        let constant = Trace::at_rate(10.0, Arrival::Constant, Some(Duration::from_secs(1)), None, 5, 5, 0);
        let stamps: Vec<u64> = constant.entries.iter().map(|e| e.timestamp).collect();
        assert_eq!(stamps, [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]);
        let counted = Trace::at_rate(1000.0, Arrival::Poisson, None, Some(25), 5, 5, 0);
        assert_eq!(counted.entries.len(), 25);
        let fast = constant.time_scaled(10.0);
        assert_eq!(fast.span(), Duration::from_millis(90));
    }

    #[test]
    fn trace_files_name_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        std::fs::write(&path, "{\"timestamp\": 5, \"input_length\": 1, \"output_length\": 2}\n\n{\"timestamp\": 1}\n")
            .unwrap();
        let err = Trace::read(&path).unwrap_err();
        assert!(err.contains("trace.jsonl:3:") && err.contains("input_length"), "{err}");
        std::fs::write(&path, "{\"timestamp\": 5, \"input_length\": 1, \"output_length\": 2}\n{\"timestamp\": 1, \"input_length\": 1, \"output_length\": 2}\n").unwrap();
        let trace = Trace::read(&path).unwrap();
        assert_eq!(trace.entries[0].timestamp, 1, "sorted by time");
    }
}
