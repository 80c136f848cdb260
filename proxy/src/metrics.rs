//! Router-wide counters and the Prometheus text rendering. Everything is an atomic
//! updated on the request path; rendering happens only on scrape. Every label value goes
//! through [`labels`], which escapes it: backend ids come from operator-supplied URLs.

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
            let _ = writeln!(
                out,
                "tandemn_requests_total{} {}",
                labels(&[("tier", tier.as_str())]),
                self.tier(tier).requests.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP tandemn_output_tokens_total Output tokens reported in response usage, by tier.");
        let _ = writeln!(out, "# TYPE tandemn_output_tokens_total counter");
        for tier in [Tier::Spot, Tier::Serverless] {
            let tokens = self.tier(tier).output_tokens.load(Relaxed);
            let _ = writeln!(out, "tandemn_output_tokens_total{} {tokens}", labels(&[("tier", tier.as_str())]));
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
                let bucket_labels = labels(&[("tier", tier.as_str()), ("le", &le)]);
                let _ = writeln!(out, "tandemn_ttfb_seconds_bucket{bucket_labels} {cumulative}");
            }
            let sum = counters.ttfb_sum_us.load(Relaxed) as f64 / 1e6;
            let tier_labels = labels(&[("tier", tier.as_str())]);
            let _ = writeln!(out, "tandemn_ttfb_seconds_sum{tier_labels} {sum}");
            let _ = writeln!(out, "tandemn_ttfb_seconds_count{tier_labels} {cumulative}");
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
            let _ = writeln!(out, "tandemn_rejected_total{} {}", labels(&[("reason", reason)]), counter.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP tandemn_backend_responses_total Responses per backend and status class.");
        let _ = writeln!(out, "# TYPE tandemn_backend_responses_total counter");
        for backend in table.backends() {
            let s = &backend.stats;
            for (class, counter) in [("2xx", &s.responses_2xx), ("4xx", &s.responses_4xx), ("5xx", &s.responses_5xx)] {
                let sample_labels =
                    labels(&[("tier", backend.tier.as_str()), ("backend", &backend.id), ("status", class)]);
                let _ = writeln!(out, "tandemn_backend_responses_total{sample_labels} {}", counter.load(Relaxed));
            }
        }
        let _ = writeln!(
            out,
            "# HELP tandemn_backend_inflight Requests in progress per backend.\n# TYPE tandemn_backend_inflight gauge"
        );
        for backend in table.backends() {
            let sample_labels = labels(&[("tier", backend.tier.as_str()), ("backend", &backend.id)]);
            let _ = writeln!(out, "tandemn_backend_inflight{sample_labels} {}", backend.inflight());
        }
        out
    }
}

/// A label set, `{name="value",...}`, with each value escaped as the text exposition
/// format requires (`\\`, `\"` and `\n`), so no value can end its sample line or forge
/// another. Names are the router's own constants. The escaping is three characters, so
/// it is written here rather than taken from a client library whose registry the
/// rendering would have to be rebuilt around.
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use proptest::prelude::*;
    use tandemn_config::api::{BackendAuth, BackendUrl};

    use super::*;
    use crate::backend::Backend;

    /// One sample line of the text exposition format.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
    }

    /// Parses the text exposition format strictly enough to catch a forged or broken
    /// line: every line is a `# HELP`/`# TYPE` comment or one well-formed sample whose
    /// family was declared; label values are unescaped.
    fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
        let mut declared = Vec::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE line {line:?}"))?;
                if !["counter", "gauge", "histogram"].contains(&kind) {
                    return Err(format!("bad type in {line:?}"));
                }
                declared.push(name.to_string());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let name_end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(0);
            let name = &line[..name_end];
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(format!("no metric name in {line:?}"));
            }
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            if !declared.iter().any(|d| d == name || d == family) {
                return Err(format!("undeclared family in {line:?}"));
            }
            let mut rest = line[name_end..].chars().peekable();
            let mut labels = BTreeMap::new();
            if rest.peek() == Some(&'{') {
                rest.next();
                loop {
                    let label: String = rest.by_ref().take_while(|&c| c != '=').collect();
                    if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!("bad label name {label:?} in {line:?}"));
                    }
                    if rest.next() != Some('"') {
                        return Err(format!("unquoted label value in {line:?}"));
                    }
                    let mut value = String::new();
                    loop {
                        match rest.next().ok_or(format!("unterminated label value in {line:?}"))? {
                            '"' => break,
                            '\\' => match rest.next() {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                other => return Err(format!("bad escape {other:?} in {line:?}")),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.insert(label, value);
                    match rest.next() {
                        Some(',') => {}
                        Some('}') => break,
                        other => return Err(format!("{other:?} after a label value in {line:?}")),
                    }
                }
            }
            if rest.next() != Some(' ') {
                return Err(format!("no space before the value in {line:?}"));
            }
            let value: String = rest.collect();
            if value.parse::<f64>().is_err() {
                return Err(format!("bad value {value:?} in {line:?}"));
            }
            samples.push(Sample { name: name.to_string(), labels });
        }
        Ok(samples)
    }

    /// A backend whose host and base path are whatever the test says: built directly, so
    /// URL validation (wherever it lives) is not what keeps the exposition intact.
    fn table_with(host: &str, base_path: &str) -> RouteTable {
        let url = BackendUrl { tls: false, host: host.to_string(), port: 80, base_path: base_path.to_string() };
        let backend =
            Backend::new(Backend::identity(Tier::Spot, &url), Tier::Spot, url, BackendAuth::None, 4, Arc::default());
        RouteTable { spot: vec![Arc::new(backend)].into(), ..RouteTable::default() }
    }

    #[test]
    fn hostile_backend_ids_cannot_forge_or_break_lines() {
        let table = table_with("evil\"} 1\ntandemn_forged_total 666\n# TYPE x counter\\", "/a\\\"b\nc");
        let id = &table.spot[0].id;
        let text = Metrics::default().render(&table);
        let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(samples.iter().all(|s| s.name != "tandemn_forged_total"), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("tandemn_forged_total") || l == "# TYPE x counter"), "{text}");
        let per_backend: Vec<&Sample> = samples.iter().filter(|s| s.labels.contains_key("backend")).collect();
        assert_eq!(per_backend.len(), 4, "three status classes and in-flight: {text}");
        for sample in per_backend {
            assert_eq!(&sample.labels["backend"], id, "the label value round-trips");
        }
    }

    #[test]
    fn label_values_are_escaped_exactly() {
        let cases = [
            ("plain", r#"{a="plain"}"#),
            ("q\"uote", r#"{a="q\"uote"}"#),
            ("back\\slash", r#"{a="back\\slash"}"#),
            ("new\nline", r#"{a="new\nline"}"#),
            ("\\n", r#"{a="\\n"}"#),
            ("", r#"{a=""}"#),
        ];
        for (value, expected) in cases {
            assert_eq!(labels(&[("a", value)]), expected, "{value:?}");
        }
        assert_eq!(labels(&[("a", "1"), ("b", "2")]), r#"{a="1",b="2"}"#);
    }

    proptest! {
        #[test]
        fn any_backend_id_renders_valid_exposition(host in any::<String>(), base in any::<String>()) {
            let table = table_with(&host, &base);
            let text = Metrics::default().render(&table);
            let samples = parse_exposition(&text).map_err(TestCaseError::fail)?;
            let id = &table.spot[0].id;
            prop_assert_eq!(samples.iter().filter(|s| s.labels.get("backend") == Some(id)).count(), 4);
        }
    }
}
