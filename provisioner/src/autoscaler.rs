//! How many spot replicas to run: a pure function of the policy, the load history and
//! the time, so it is tested with a fake clock.
//!
//! Demand is every request that asked for a backend, spilled ones included, averaged over
//! `demand_window`. A replica carries `target_qps`, so demand asks for
//! `ceil(rate / target_qps)` replicas (any traffic at all asks for one: the first request
//! after idle starts a launch while serverless serves it). A larger count is adopted once
//! it has been asked for during all of `upscale_delay`; a smaller one once nothing more has
//! been asked for during all of `downscale_delay`.

use std::collections::VecDeque;

use tandemn_config::SpotPolicy;

/// The router's demand counter at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    at_ms: u64,
    arrived: u64,
}

#[derive(Debug)]
pub struct Autoscaler {
    policy: SpotPolicy,
    samples: VecDeque<Sample>,
    desired: u32,
}

impl Autoscaler {
    /// Starts with the router: its demand counter was 0 at `now_ms`.
    pub fn new(policy: SpotPolicy, now_ms: u64) -> Self {
        let desired = policy.min_replicas;
        Self { policy, samples: VecDeque::from([Sample { at_ms: now_ms, arrived: 0 }]), desired }
    }

    /// Records the demand counter at `now_ms` and returns the replica count to run.
    pub fn observe(&mut self, now_ms: u64, arrived: u64) -> u32 {
        self.samples.push_back(Sample { at_ms: now_ms, arrived });
        let keep_ms = 1000 * (self.policy.demand_window + self.policy.upscale_delay.max(self.policy.downscale_delay));
        // Keep one sample older than everything the decision looks at.
        while self.samples.len() > 2 && self.samples[1].at_ms + keep_ms < now_ms {
            self.samples.pop_front();
        }
        self.desired = self.decide(now_ms);
        self.desired
    }

    fn decide(&self, now_ms: u64) -> u32 {
        let (min, max) = (self.policy.min_replicas, self.policy.max_replicas);
        let current = self.desired.clamp(min, max);
        let Some(first) = self.samples.front() else { return current };
        // The asked-for counts over a span, if the history covers all of it.
        let asked_over = |delay_s: u64| -> Option<(u32, u32)> {
            let from = now_ms.checked_sub(1000 * delay_s)?;
            if first.at_ms > from {
                return None;
            }
            let asked = (0..self.samples.len()).filter(|&i| self.samples[i].at_ms >= from).map(|i| self.asked_at(i));
            asked.fold(None, |acc, n| Some(acc.map_or((n, n), |(lo, hi): (u32, u32)| (lo.min(n), hi.max(n)))))
        };
        let now_asked = self.asked_at(self.samples.len() - 1);
        if now_asked > current {
            let sustained = if self.policy.upscale_delay == 0 {
                Some((now_asked, now_asked))
            } else {
                asked_over(self.policy.upscale_delay)
            };
            if let Some((lowest, _)) = sustained
                && lowest > current
            {
                return lowest;
            }
        } else if now_asked < current {
            let sustained = if self.policy.downscale_delay == 0 {
                Some((now_asked, now_asked))
            } else {
                asked_over(self.policy.downscale_delay)
            };
            if let Some((_, highest)) = sustained
                && highest < current
            {
                return highest;
            }
        }
        current
    }

    /// Replicas the demand at sample `index` asks for, within the policy's bounds.
    fn asked_at(&self, index: usize) -> u32 {
        let sample = self.samples[index];
        // The counter at the window's start: the last earlier sample at or before it, or
        // the oldest one when the history is shorter than the window.
        let mut earlier = self.samples.range(..index);
        let base = match sample.at_ms.checked_sub(1000 * self.policy.demand_window) {
            Some(start) => earlier.clone().take_while(|s| s.at_ms <= start).last().or(earlier.next()),
            None => earlier.next(),
        };
        let (base_at, base_arrived) = base.map_or((sample.at_ms, sample.arrived), |s| (s.at_ms, s.arrived));
        let requests = sample.arrived.saturating_sub(base_arrived);
        // Over the window, or over the longer span a stalled tick left between samples.
        let span_ms = sample.at_ms.saturating_sub(base_at).max(1000 * self.policy.demand_window);
        let rate = requests as f64 * 1000.0 / span_ms as f64;
        let replicas = (rate / self.policy.target_qps).ceil();
        let replicas = if replicas >= f64::from(u32::MAX) { u32::MAX } else { replicas as u32 };
        replicas.clamp(self.policy.min_replicas, self.policy.max_replicas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SpotPolicy {
        SpotPolicy {
            min_replicas: 0,
            max_replicas: 4,
            target_qps: 10.0,
            upscale_delay: 5,
            downscale_delay: 30,
            demand_window: 10,
        }
    }

    /// Feeds a constant request rate from `from_s` to `to_s` (one sample a second) and
    /// returns the counter and the desired count after each second.
    fn run(scaler: &mut Autoscaler, arrived: &mut u64, from_s: u64, to_s: u64, rate: u64) -> Vec<(u64, u32)> {
        (from_s..to_s)
            .map(|t| {
                *arrived += rate;
                (t, scaler.observe(t * 1000, *arrived))
            })
            .collect()
    }

    fn first_time(trace: &[(u64, u32)], desired: u32) -> Option<u64> {
        trace.iter().find(|&&(_, d)| d == desired).map(|&(t, _)| t)
    }

    #[test]
    fn idle_stays_at_zero() {
        let mut scaler = Autoscaler::new(policy(), 0);
        let mut arrived = 0;
        assert!(run(&mut scaler, &mut arrived, 0, 120, 0).iter().all(|&(_, d)| d == 0));
    }

    #[test]
    fn the_first_request_after_idle_asks_for_one_replica_after_the_upscale_delay() {
        let mut scaler = Autoscaler::new(policy(), 0);
        let mut arrived = 0;
        run(&mut scaler, &mut arrived, 0, 60, 0);
        arrived += 1;
        let trace: Vec<_> = (60..70).map(|t| (t, scaler.observe(t * 1000, arrived))).collect();
        assert_eq!(trace[0].1, 0, "not before the upscale delay");
        assert_eq!(first_time(&trace, 1), Some(65));
    }

    #[test]
    fn sizes_for_target_qps_and_clamps_to_max() {
        let mut scaler = Autoscaler::new(policy(), 0);
        let mut arrived = 0;
        let trace = run(&mut scaler, &mut arrived, 0, 60, 25);
        assert_eq!(trace.last().unwrap().1, 3, "25 req/s at 10 per replica");
        let trace = run(&mut scaler, &mut arrived, 60, 120, 1000);
        assert_eq!(trace.last().unwrap().1, 4, "clamped to max_replicas");
    }

    #[test]
    fn a_spike_shorter_than_the_upscale_delay_does_not_scale_up_but_a_sustained_one_does() {
        let mut scaler = Autoscaler { desired: 1, ..Autoscaler::new(SpotPolicy { demand_window: 2, ..policy() }, 0) };
        let mut arrived = 0;
        run(&mut scaler, &mut arrived, 0, 30, 5);
        let spike = run(&mut scaler, &mut arrived, 30, 32, 100);
        let after = run(&mut scaler, &mut arrived, 32, 40, 5);
        assert!(spike.iter().chain(&after).all(|&(_, d)| d == 1), "{spike:?} {after:?}");
        let held = run(&mut scaler, &mut arrived, 40, 60, 30);
        assert_eq!(first_time(&held, 3), Some(40 + 1 + 5), "demand fills the 2 s window, then holds 5 s: {held:?}");
    }

    #[test]
    fn downscale_waits_for_the_delay_and_scales_to_zero_by_default() {
        let mut scaler = Autoscaler::new(policy(), 0);
        let mut arrived = 0;
        assert_eq!(run(&mut scaler, &mut arrived, 0, 60, 20).last().unwrap().1, 2);
        let idle = run(&mut scaler, &mut arrived, 60, 200, 0);
        // The last requests came at 59 s. The 10 s average asks for 1 from 64 s and for
        // nothing from 69 s; each step down waits 30 s.
        assert_eq!(first_time(&idle, 1), Some(64 + 30), "{idle:?}");
        assert_eq!(first_time(&idle, 0), Some(69 + 30), "{idle:?}");
    }

    #[test]
    fn min_replicas_is_kept_without_traffic() {
        let mut scaler = Autoscaler::new(SpotPolicy { min_replicas: 1, ..policy() }, 0);
        let mut arrived = 0;
        assert!(run(&mut scaler, &mut arrived, 0, 100, 0).iter().all(|&(_, d)| d == 1));
    }

    #[test]
    fn a_stalled_tick_does_not_inflate_the_rate() {
        let mut scaler = Autoscaler::new(SpotPolicy { upscale_delay: 0, demand_window: 2, ..policy() }, 0);
        scaler.observe(1_000, 15);
        // Five seconds pass between samples with 10 req/s: one replica, not three.
        assert_eq!(scaler.observe(6_000, 65), 1);
    }

    #[test]
    fn zero_delays_follow_demand_at_once() {
        let mut scaler = Autoscaler::new(SpotPolicy { upscale_delay: 0, downscale_delay: 0, ..policy() }, 0);
        let mut arrived = 0;
        assert_eq!(run(&mut scaler, &mut arrived, 0, 1, 15)[0].1, 1);
        let trace = run(&mut scaler, &mut arrived, 1, 40, 0);
        assert_eq!(first_time(&trace, 0), Some(10), "as soon as the window is empty");
    }
}
