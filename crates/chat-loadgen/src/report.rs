//! What a run measured: per-client tallies (no locks on the hot path), merged into one
//! [`Report`] printed as text or JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::options::{ChatKind, Mode};

/// Latencies are kept in microseconds, up to a minute (a request timeout is shorter), to three
/// significant digits: 0.1 % error at any scale.
const HIGHEST_US: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("bounds are valid")
}

/// Acknowledged requests of one kind and their latencies.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    pub(crate) acknowledged: u64,
    pub(crate) errors: u64,
    /// From the time the request was due (the schedule slot in open loop) to its answer.
    latency: Histogram<u64>,
    /// From the time the request was actually sent to its answer.
    service: Histogram<u64>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Recorder {
            acknowledged: 0,
            errors: 0,
            latency: histogram(),
            service: histogram(),
        }
    }

    pub(crate) fn record(&mut self, latency: Duration, service: Duration) {
        self.acknowledged += 1;
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(us(latency));
        self.service.saturating_record(us(service));
    }

    fn merge(&mut self, other: &Recorder) {
        self.acknowledged += other.acknowledged;
        self.errors += other.errors;
        // Same bounds on both sides, so adding cannot fail.
        self.latency.add(&other.latency).expect("same bounds");
        self.service.add(&other.service).expect("same bounds");
    }
}

/// One client's counts.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub(crate) writes: Recorder,
    pub(crate) reads: Recorder,
    /// Unsuccessful requests by `"<status> <code>"` or transport error kind.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Open loop: slots of the measured window the client was too far behind to send.
    pub(crate) behind_schedule: u64,
    /// Acknowledged and failed requests by the second of the window they were answered in.
    pub(crate) seconds: Vec<Second>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Tally {
            writes: Recorder::new(),
            reads: Recorder::new(),
            errors: BTreeMap::new(),
            behind_schedule: 0,
            seconds: Vec::new(),
        }
    }

    /// Counts an answer in second `at` of the window.
    pub(crate) fn at_second(&mut self, at: usize, acknowledged: bool) {
        if self.seconds.len() <= at {
            self.seconds.resize(at + 1, Second::default());
        }
        if acknowledged {
            self.seconds[at].acknowledged += 1;
        } else {
            self.seconds[at].errors += 1;
        }
    }

    pub(crate) fn error(&mut self, key: String) {
        *self.errors.entry(key).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: &Tally) {
        self.writes.merge(&other.writes);
        self.reads.merge(&other.reads);
        for (key, count) in &other.errors {
            *self.errors.entry(key.clone()).or_default() += count;
        }
        self.behind_schedule += other.behind_schedule;
        if self.seconds.len() < other.seconds.len() {
            self.seconds.resize(other.seconds.len(), Second::default());
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.acknowledged += theirs.acknowledged;
            mine.errors += theirs.errors;
        }
    }
}

/// One second of the measured window: what a failover's dip looks like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Second {
    /// Requests acknowledged in that second.
    pub acknowledged: u64,
    /// Requests that failed in that second.
    pub errors: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// One kind of request over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpReport {
    /// Requests answered with success (201/200) whose due time fell in the window.
    pub acknowledged: u64,
    /// `acknowledged` per second of the window.
    pub per_s: f64,
    /// Requests of this kind that failed (any error, see [`Report::errors`]).
    pub errors: u64,
    /// Due time to answer (open loop: from the schedule slot, so a stalled server is not
    /// hidden by the generator waiting for it). Acknowledged requests only.
    pub latency_ms: Latency,
    /// Send to answer; in closed loop the same as `latency_ms`.
    pub service_ms: Latency,
}

impl OpReport {
    fn of(recorder: &Recorder, seconds: f64) -> Self {
        OpReport {
            acknowledged: recorder.acknowledged,
            per_s: recorder.acknowledged as f64 / seconds,
            errors: recorder.errors,
            latency_ms: Latency::of(&recorder.latency),
            service_ms: Latency::of(&recorder.service),
        }
    }
}

/// The outcome of reading every chat back after the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// Chats read back.
    pub chats: usize,
    /// Writes acknowledged during setup (seed messages) and the run, warm-up included.
    pub acknowledged: u64,
    /// Of those, how many the chat reads returned.
    pub found: u64,
    /// Acknowledged but not readable: should be 0.
    pub missing: u64,
    /// Up to 10 of the missing message ids.
    pub missing_sample: Vec<String>,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What was run.
    pub mode: Mode,
    /// Private or group chats.
    pub chat: ChatKind,
    /// Concurrent users.
    pub clients: usize,
    /// Base URLs.
    pub targets: Vec<String>,
    /// Offered requests per second (open loop), `None` in closed loop.
    pub offered_rate: Option<f64>,
    /// Whether `Chat-Epoch` was sent back.
    pub chat_epoch: bool,
    /// Seconds spent registering, logging in, creating and seeding chats.
    pub setup_s: f64,
    /// Seconds of warm-up (not measured).
    pub warmup_s: f64,
    /// Seconds of the measured window (less than asked when the run was stopped).
    pub duration_s: f64,
    /// The run was stopped (Ctrl-C) before the end of its window.
    pub stopped_early: bool,
    /// Message posts.
    pub writes: OpReport,
    /// Chat reads.
    pub reads: OpReport,
    /// Writes and reads acknowledged.
    pub acknowledged: u64,
    /// `acknowledged` per second.
    pub acknowledged_per_s: f64,
    /// Failed requests by `"<HTTP status> <API error code>"` or `"transport <kind>"`.
    pub errors: BTreeMap<String, u64>,
    /// Open loop: requests due in the window that were never sent because the client was
    /// still waiting on earlier ones at the end (the offered rate was not met).
    pub behind_schedule: u64,
    /// TCP connections opened over the whole run (one per client when keep-alive holds).
    pub connections: u64,
    /// Each second of the window, by when requests were answered (the last also holds the
    /// answers that came after the window's end).
    pub per_second: Vec<Second>,
    /// Acknowledged requests of the window by target, in the order of `targets`.
    pub per_target: Vec<u64>,
    /// Set when `verify` was asked for.
    pub verification: Option<Verification>,
}

/// What the report is built from.
pub(crate) struct Inputs<'a> {
    pub(crate) options: &'a crate::Options,
    pub(crate) tally: &'a Tally,
    pub(crate) setup: Duration,
    /// The measured window: the whole duration, or less when the run was stopped.
    pub(crate) measured: Duration,
    pub(crate) connections: u64,
    pub(crate) per_target: Vec<u64>,
    pub(crate) verification: Option<Verification>,
}

impl Report {
    pub(crate) fn build(inputs: Inputs<'_>) -> Self {
        let options = inputs.options;
        let measured = inputs.measured;
        // A run stopped in its warm-up measured nothing: rates of 0, not a division by 0.
        let seconds = measured.as_secs_f64().max(1e-9);
        let tally = inputs.tally;
        let acknowledged = tally.writes.acknowledged + tally.reads.acknowledged;
        Report {
            mode: options.mode,
            chat: options.chat,
            clients: options.clients,
            targets: options.targets.iter().map(ToString::to_string).collect(),
            offered_rate: options.rate,
            chat_epoch: options.chat_epoch,
            setup_s: inputs.setup.as_secs_f64(),
            warmup_s: options.warmup.as_secs_f64(),
            duration_s: measured.as_secs_f64(),
            stopped_early: measured < options.duration,
            writes: OpReport::of(&tally.writes, seconds),
            reads: OpReport::of(&tally.reads, seconds),
            acknowledged,
            acknowledged_per_s: acknowledged as f64 / seconds,
            errors: tally.errors.clone(),
            behind_schedule: tally.behind_schedule,
            connections: inputs.connections,
            per_second: {
                // Seconds nothing was answered in are zeros, not missing; answers after the
                // end of a window cut short count in its last second.
                let whole = (measured.as_secs_f64().ceil() as usize).max(1);
                let mut seconds = tally.seconds.clone();
                seconds.resize(seconds.len().max(whole), Second::default());
                for late in seconds.split_off(whole) {
                    seconds[whole - 1].acknowledged += late.acknowledged;
                    seconds[whole - 1].errors += late.errors;
                }
                seconds
            },
            per_target: inputs.per_target,
            verification: inputs.verification,
        }
    }

    /// Failed requests in the window.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn latency_line(f: &mut fmt::Formatter<'_>, label: &str, l: &Latency) -> fmt::Result {
    writeln!(
        f,
        "    {label:<8} ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pace = match self.offered_rate {
            Some(rate) => format!("open loop at {rate:.0} req/s offered"),
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "chat-loadgen: {:?} on {:?} chats, {} clients, {} target(s), {pace}, chat-epoch {}",
            self.mode,
            self.chat,
            self.clients,
            self.targets.len(),
            if self.chat_epoch { "sent" } else { "not sent" },
        )?;
        writeln!(
            f,
            "  setup {:.1} s, warm-up {:.1} s, measured {:.1} s{}, {} connection(s)",
            self.setup_s,
            self.warmup_s,
            self.duration_s,
            if self.stopped_early {
                " (stopped early)"
            } else {
                ""
            },
            self.connections
        )?;
        for (name, op) in [("writes", &self.writes), ("reads", &self.reads)] {
            if op.acknowledged == 0 && op.errors == 0 {
                continue;
            }
            writeln!(
                f,
                "  {name:<6} {} acknowledged ({:.1}/s), {} failed",
                op.acknowledged, op.per_s, op.errors
            )?;
            latency_line(f, "latency", &op.latency_ms)?;
            if self.offered_rate.is_some() {
                latency_line(f, "service", &op.service_ms)?;
            }
        }
        writeln!(
            f,
            "  total  {} acknowledged ({:.1}/s)",
            self.acknowledged, self.acknowledged_per_s
        )?;
        if self.targets.len() > 1 {
            for (target, count) in self.targets.iter().zip(&self.per_target) {
                writeln!(f, "    at {target}: {count}")?;
            }
        }
        let acked = self.per_second.iter().map(|s| s.acknowledged);
        if let (Some(low), Some(high)) = (acked.clone().min(), acked.max()) {
            writeln!(f, "  per second: {low} to {high} acknowledged")?;
        }
        if self.offered_rate.is_some() {
            writeln!(
                f,
                "  behind schedule (never sent): {}",
                self.behind_schedule
            )?;
        }
        if self.errors.is_empty() {
            writeln!(f, "  errors: none")?;
        } else {
            writeln!(f, "  errors:")?;
            for (key, count) in &self.errors {
                writeln!(f, "    {key}: {count}")?;
            }
        }
        if let Some(v) = &self.verification {
            writeln!(
                f,
                "  verify: {} of {} acknowledged writes readable in {} chats, {} missing",
                v.found, v.acknowledged, v.chats, v.missing
            )?;
            if !v.missing_sample.is_empty() {
                writeln!(f, "    missing e.g. {}", v.missing_sample.join(", "))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_report_names_targets_seconds_and_errors() {
        let targets = vec!["http://a:1".parse().unwrap(), "http://b:2".parse().unwrap()];
        let options = crate::Options {
            duration: Duration::from_secs(2),
            ..crate::Options::new(targets)
        };
        let mut tally = Tally::new();
        tally
            .writes
            .record(Duration::from_millis(3), Duration::from_millis(3));
        tally.at_second(0, true);
        tally.at_second(5, false);
        tally.error("transport timeout".into());
        let report = Report::build(Inputs {
            options: &options,
            tally: &tally,
            setup: Duration::ZERO,
            measured: Duration::from_secs(2),
            connections: 2,
            per_target: vec![1, 0],
            verification: None,
        });
        // The error answered after the window is counted in its last second.
        assert_eq!(
            report.per_second,
            vec![
                Second {
                    acknowledged: 1,
                    errors: 0
                },
                Second {
                    acknowledged: 0,
                    errors: 1
                }
            ]
        );
        let text = report.to_string();
        for line in [
            "at http://a:1: 1",
            "at http://b:2: 0",
            "per second: 0 to 1 acknowledged",
            "transport timeout: 1",
            "writes 1 acknowledged (0.5/s)",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(!report.stopped_early);
    }

    #[test]
    fn tallies_merge_counts_and_histograms() {
        let mut a = Tally::new();
        let mut b = Tally::new();
        for ms in 1..=99 {
            a.writes
                .record(Duration::from_millis(ms), Duration::from_millis(ms));
        }
        b.writes
            .record(Duration::from_millis(500), Duration::from_millis(1));
        b.error("503 unavailable".into());
        b.error("503 unavailable".into());
        a.at_second(2, true);
        b.at_second(0, false);
        b.at_second(2, true);
        a.merge(&b);
        let second = |acknowledged, errors| Second {
            acknowledged,
            errors,
        };
        assert_eq!(a.seconds, vec![second(0, 1), second(0, 0), second(2, 0)]);
        assert_eq!(a.writes.acknowledged, 100);
        assert_eq!(a.errors["503 unavailable"], 2);
        let l = Latency::of(&a.writes.latency);
        assert!((l.p50 - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.max - 500.0).abs() < 1.0, "{l:?}");
        let s = Latency::of(&a.writes.service);
        assert!(s.max < 100.0, "service time is kept apart: {s:?}");
    }
}
