//! Percentiles and the run report: latency summaries, throughput, errors by kind and
//! which backend served each request.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

/// The value below which `p` percent of `sorted` lies, interpolating linearly between
/// the two nearest ranks (numpy's default). `sorted` must be ascending and non-empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lower, upper) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lower] + (sorted[upper] - sorted[lower]) * (rank - lower as f64)
}

/// p50, p90, p99, max and mean of one measurement, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        Self {
            count: samples.len(),
            mean,
            p50: percentile(&samples, 50.0),
            p90: percentile(&samples, 90.0),
            p99: percentile(&samples, 99.0),
            max: samples[samples.len() - 1],
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub url: String,
    pub mode: String,
    pub streaming: bool,
    pub duration_secs: f64,
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Failures by kind (`connect`, `timeout`, `status_503`, `stream_error`, `truncated`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Failures by how far they got (`before_response`, `error_status`,
    /// `before_first_event`, `mid_stream`): only the last two had started an answer.
    pub stages: BTreeMap<String, u64>,
    /// Failures by stage, kind and the router's `x-tandemn-error` reason if it gave one,
    /// e.g. `error_status status_502 upstream_unavailable` or `mid_stream stream_error`.
    pub failures: BTreeMap<String, u64>,
    pub requests_per_sec: f64,
    pub output_tokens: u64,
    pub output_tokens_per_sec: f64,
    /// Time to the first streamed event.
    pub ttft_ms: Summary,
    /// Every gap between consecutive streamed token events.
    pub itl_ms: Summary,
    /// Send to last byte.
    pub latency_ms: Summary,
    /// Requests per `x-tandemn-backend` value.
    pub backends: BTreeMap<String, u64>,
    /// Requests per tier (the backend value up to its first `/`).
    pub tiers: BTreeMap<String, u64>,
    /// The load generator's own CPU use over the run, in percent of one core.
    pub client_cpu_percent: Option<f64>,
    /// Requests sent in the first `warmup_secs` were sent but are not in the numbers above.
    pub warmup_secs: f64,
    pub warmup_requests: u64,
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let stream = if self.streaming { "streaming" } else { "non-streaming" };
        let _ = writeln!(out, "{} ({}, {stream}) for {:.1} s", self.url, self.mode, self.duration_secs);
        if self.warmup_requests > 0 {
            let _ = writeln!(
                out,
                "after a {:.1} s warm-up ({} requests not measured)",
                self.warmup_secs, self.warmup_requests
            );
        }
        let _ = writeln!(
            out,
            "requests {}  ok {}  failed {}  {:.1} req/s  {} output tokens  {:.0} tok/s\n",
            self.requests,
            self.succeeded,
            self.failed,
            self.requests_per_sec,
            self.output_tokens,
            self.output_tokens_per_sec
        );
        let _ = writeln!(
            out,
            "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "ms", "count", "mean", "p50", "p90", "p99", "max"
        );
        for (name, s) in [("ttft", &self.ttft_ms), ("inter-token", &self.itl_ms), ("latency", &self.latency_ms)] {
            let _ = writeln!(
                out,
                "{name:<12} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                s.count, s.mean, s.p50, s.p90, s.p99, s.max
            );
        }
        if let Some(cpu) = self.client_cpu_percent {
            let _ = writeln!(out, "\nload generator CPU: {cpu:.0}% of one core");
        }
        if !self.errors.is_empty() {
            let errors: Vec<String> = self.errors.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
            let _ = writeln!(out, "\nerrors: {}", errors.join(", "));
            let failures: Vec<String> = self.failures.iter().map(|(what, n)| format!("{what} {n}")).collect();
            let _ = writeln!(out, "failed: {}", failures.join(", "));
        }
        if !self.tiers.is_empty() {
            let total: u64 = self.tiers.values().sum();
            let shares: Vec<String> = self
                .tiers
                .iter()
                .map(|(tier, n)| format!("{tier} {n} ({:.0}%)", *n as f64 * 100.0 / total as f64))
                .collect();
            let _ = writeln!(out, "\nserved by: {}", shares.join(", "));
            let backends: Vec<String> = self.backends.iter().map(|(b, n)| format!("{b} {n}")).collect();
            let _ = writeln!(out, "backends:  {}", backends.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&data, 0.0), 1.0);
        assert_eq!(percentile(&data, 100.0), 10.0);
        assert_eq!(percentile(&data, 50.0), 5.5);
        assert!((percentile(&data, 90.0) - 9.1).abs() < 1e-9);
        assert!((percentile(&data, 99.0) - 9.91).abs() < 1e-9);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[1.0, 3.0], 25.0), 1.5);
    }

    #[test]
    fn summaries_sort_their_samples() {
        let summary = Summary::of(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(summary, Summary { count: 5, mean: 3.0, p50: 3.0, p90: 4.6, p99: 4.96, max: 5.0 });
        assert_eq!(Summary::of(Vec::new()), Summary::default());
        let spread: Vec<f64> = (1..=1000).map(f64::from).collect();
        let summary = Summary::of(spread.into_iter().rev().collect());
        assert!((summary.p99 - 990.01).abs() < 1e-9 && summary.max == 1000.0);
    }
}
