//! Router-wide counters and the Prometheus text rendering. Everything is an atomic
//! updated on the request path; rendering happens only on scrape.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tandemn_config::api::Tier;

use crate::routing::RouteTable;

/// Upper bounds of the time-to-first-byte histogram, in seconds.
const TTFB_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
pub struct TierCounters {
    pub requests: AtomicU64,
    pub output_tokens: AtomicU64,
    ttfb_buckets: [AtomicU64; TTFB_BUCKETS.len() + 1],
    ttfb_sum_us: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    pub spot: TierCounters,
    pub serverless: TierCounters,
    pub inflight: AtomicU64,
    /// Most requests in flight at once since the provisioner last looked.
    pub peak_inflight: AtomicU64,
    /// Requests that asked for a backend (admitted or not): the demand signal.
    pub arrived: AtomicU64,
    pub spillovers: AtomicU64,
    pub failovers: AtomicU64,
    pub rejected_unauthorized: AtomicU64,
    pub rejected_overloaded: AtomicU64,
    pub rejected_no_capacity: AtomicU64,
    pub rejected_too_large: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub stream_errors: AtomicU64,
    pub client_aborts: AtomicU64,
}

impl Metrics {
    pub fn tier(&self, tier: Tier) -> &TierCounters {
        match tier {
            Tier::Spot => &self.spot,
            Tier::Serverless => &self.serverless,
        }
    }

    pub fn observe_ttfb(&self, tier: Tier, ttfb: Duration) {
        let counters = self.tier(tier);
        let seconds = ttfb.as_secs_f64();
        let bucket = TTFB_BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(TTFB_BUCKETS.len());
        counters.ttfb_buckets[bucket].fetch_add(1, Relaxed);
        counters.ttfb_sum_us.fetch_add(u64::try_from(ttfb.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn rejected(&self) -> u64 {
        self.rejected_unauthorized.load(Relaxed)
            + self.rejected_overloaded.load(Relaxed)
            + self.rejected_no_capacity.load(Relaxed)
            + self.rejected_too_large.load(Relaxed)
    }

    /// The Prometheus text exposition of the router and of every backend in `table`.
    pub fn render(&self, table: &RouteTable) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP tandemn_requests_total Requests routed, by tier.");
        let _ = writeln!(out, "# TYPE tandemn_requests_total counter");
        for tier in [Tier::Spot, Tier::Serverless] {
            let _ =
                writeln!(out, "tandemn_requests_total{{tier=\"{tier}\"}} {}", self.tier(tier).requests.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP tandemn_output_tokens_total Output tokens reported in response usage, by tier.");
        let _ = writeln!(out, "# TYPE tandemn_output_tokens_total counter");
        for tier in [Tier::Spot, Tier::Serverless] {
            let tokens = self.tier(tier).output_tokens.load(Relaxed);
            let _ = writeln!(out, "tandemn_output_tokens_total{{tier=\"{tier}\"}} {tokens}");
        }
        let _ =
            writeln!(out, "# HELP tandemn_ttfb_seconds Time from the first attempt to the upstream's response header.");
        let _ = writeln!(out, "# TYPE tandemn_ttfb_seconds histogram");
        for tier in [Tier::Spot, Tier::Serverless] {
            let counters = self.tier(tier);
            let mut cumulative = 0;
            for (i, bucket) in counters.ttfb_buckets.iter().enumerate() {
                cumulative += bucket.load(Relaxed);
                let le = TTFB_BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(out, "tandemn_ttfb_seconds_bucket{{tier=\"{tier}\",le=\"{le}\"}} {cumulative}");
            }
            let sum = counters.ttfb_sum_us.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "tandemn_ttfb_seconds_sum{{tier=\"{tier}\"}} {sum}");
            let _ = writeln!(out, "tandemn_ttfb_seconds_count{{tier=\"{tier}\"}} {cumulative}");
        }
        let singles = [
            (
                "tandemn_inflight_requests",
                "gauge",
                "Requests in progress, streams included.",
                self.inflight.load(Relaxed),
            ),
            (
                "tandemn_spillovers_total",
                "counter",
                "Requests sent to serverless because spot was full.",
                self.spillovers.load(Relaxed),
            ),
            (
                "tandemn_failovers_total",
                "counter",
                "Attempts moved to another backend before the first byte.",
                self.failovers.load(Relaxed),
            ),
            (
                "tandemn_upstream_failures_total",
                "counter",
                "Transport failures and retryable statuses from upstreams.",
                self.upstream_failures.load(Relaxed),
            ),
            (
                "tandemn_stream_errors_total",
                "counter",
                "Streams ended with an error event after the first byte.",
                self.stream_errors.load(Relaxed),
            ),
            (
                "tandemn_client_aborts_total",
                "counter",
                "Requests whose client went away; the upstream was cancelled.",
                self.client_aborts.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in singles {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP tandemn_rejected_total Requests the router refused, by reason.\n# TYPE tandemn_rejected_total counter"
        );
        for (reason, counter) in [
            ("unauthorized", &self.rejected_unauthorized),
            ("overloaded", &self.rejected_overloaded),
            ("no_capacity", &self.rejected_no_capacity),
            ("too_large", &self.rejected_too_large),
        ] {
            let _ = writeln!(out, "tandemn_rejected_total{{reason=\"{reason}\"}} {}", counter.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP tandemn_backend_responses_total Responses per backend and status class.");
        let _ = writeln!(out, "# TYPE tandemn_backend_responses_total counter");
        for backend in table.backends() {
            let s = &backend.stats;
            for (class, counter) in [("2xx", &s.responses_2xx), ("4xx", &s.responses_4xx), ("5xx", &s.responses_5xx)] {
                let _ = writeln!(
                    out,
                    "tandemn_backend_responses_total{{tier=\"{}\",backend=\"{}\",status=\"{class}\"}} {}",
                    backend.tier,
                    backend.id,
                    counter.load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tandemn_backend_inflight Requests in progress per backend.\n# TYPE tandemn_backend_inflight gauge"
        );
        for backend in table.backends() {
            let _ = writeln!(
                out,
                "tandemn_backend_inflight{{tier=\"{}\",backend=\"{}\"}} {}",
                backend.tier,
                backend.id,
                backend.inflight()
            );
        }
        out
    }
}
