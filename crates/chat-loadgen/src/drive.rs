//! The measured phase: each client runs its own loop on its own connection, closed loop (the
//! next request as soon as the last is answered) or open loop (requests due at fixed slots,
//! latency taken from the slot so a slow answer cannot hide the requests it delayed, the
//! "coordinated omission" of closed-loop tools).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::conn::Call;
use crate::options::{MessageIds, Mode, Options};
use crate::report::{Tally, Verification};
use crate::setup::{Chats, Client};

/// When each request of one client is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// As soon as the previous answer is in.
    Closed,
    /// Every `interval`, the first at `first`.
    Open { first: Instant, interval: Duration },
}

impl Pace {
    /// Client `index` of `clients` sharing `rate` requests per second: each gets an equal
    /// share, phased so the clients' slots interleave evenly rather than arriving together.
    pub(crate) fn new(rate: Option<f64>, clients: usize, index: usize, start: Instant) -> Self {
        match rate {
            None => Pace::Closed,
            Some(rate) => {
                let interval = Duration::from_secs_f64(clients as f64 / rate);
                let phase = interval.mul_f64(index as f64 / clients as f64);
                Pace::Open {
                    first: start + phase,
                    interval,
                }
            }
        }
    }

    /// The due time of request `n` (counting from 0), or `now` in closed loop.
    pub(crate) fn due(&self, n: u64, now: Instant) -> Instant {
        match *self {
            Pace::Closed => now,
            Pace::Open { first, interval } => first + times(interval, n),
        }
    }

    /// Open loop: how many slots from request `n` on fall in `[from, to)`: those due in the
    /// window and never sent.
    pub(crate) fn unsent(&self, n: u64, from: Instant, to: Instant) -> u64 {
        let Pace::Open { first, interval } = *self else {
            return 0;
        };
        // Slots before `at`: the k with first + k * interval < at.
        let before = |at: Instant| -> u64 {
            let span = at.saturating_duration_since(first).as_nanos();
            let step = interval.as_nanos().max(1);
            u64::try_from(span.div_ceil(step)).unwrap_or(u64::MAX)
        };
        before(to).saturating_sub(before(from).max(n))
    }
}

/// `interval * n`, exactly (a float would drift over a long run).
fn times(interval: Duration, n: u64) -> Duration {
    let nanos = interval.as_nanos().saturating_mul(u128::from(n));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The timeline shared by every client.
pub(crate) struct Plan {
    pub(crate) start: Instant,
    pub(crate) measure_from: Instant,
    pub(crate) end: Instant,
    /// Index of the window's last second.
    pub(crate) last_second: u64,
    /// When the run was stopped early (Ctrl-C), if it was.
    pub(crate) stopped: watch::Receiver<Option<Instant>>,
    pub(crate) options: Options,
    /// Message body up to the content (the id and closing follow).
    pub(crate) content: String,
}

impl Plan {
    pub(crate) fn new(
        options: &Options,
        start: Instant,
        stopped: watch::Receiver<Option<Instant>>,
    ) -> Self {
        let measure_from = start + options.warmup;
        // Content is plain ASCII, so it goes into the JSON as is.
        let content = "m".repeat(options.message_bytes);
        Plan {
            start,
            measure_from,
            end: measure_from + options.duration,
            last_second: (options.duration.as_secs_f64().ceil() as u64).max(1) - 1,
            stopped,
            options: options.clone(),
            content,
        }
    }

    /// The end of the measured window: its planned end, or the stop if that came first.
    pub(crate) fn until(&self) -> Instant {
        match *self.stopped.borrow() {
            Some(at) => at.clamp(self.measure_from, self.end),
            None => self.end,
        }
    }
}

/// Sleeps until `at`; false if the run was stopped first.
async fn sleep_or_stop(at: Instant, stopped: &mut watch::Receiver<Option<Instant>>) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(at) => true,
        _ = stopped.wait_for(Option::is_some) => false,
    }
}

/// How long a client pauses after a 429 or 503: what the server asked, at most a second so a
/// run does not stall through a short failover.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One client's loop until the end of the window; answers the client and its counts.
pub(crate) async fn client_loop(mut client: Client, plan: Arc<Plan>) -> (Client, Tally) {
    let options = &plan.options;
    let mut tally = Tally::new();
    // Choices follow the seed, so runs are repeatable; message ids must never repeat across
    // runs (the server refuses an id reused for another message with 409), so they come from
    // a generator seeded by the OS.
    let mut rng = SmallRng::seed_from_u64(
        options.seed ^ (client.index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let mut ids = SmallRng::seed_from_u64(rand::random());
    let pace = Pace::new(options.rate, options.clients, client.index, plan.start);
    let read_path = format!("{}?limit={}", client.chat_path, options.page_size);
    let write_path = client.chat_path.clone();
    let mut n = 0u64;
    let mut stopped = plan.stopped.clone();
    let mut running = sleep_or_stop(plan.start, &mut stopped).await;
    while running {
        let now = Instant::now();
        let due = pace.due(n, now);
        if due >= plan.end || now >= plan.end || stopped.borrow().is_some() {
            break;
        }
        if due > now && !sleep_or_stop(due, &mut stopped).await {
            break;
        }
        n += 1;
        let read = match options.mode {
            Mode::Writes => false,
            Mode::Reads => true,
            Mode::Mixed => rng.random_bool(options.read_fraction),
        };
        let epoch = options.chat_epoch.then_some(client.epoch);
        let sent = Instant::now();
        let (result, id) = if read {
            let call = Call {
                epoch,
                ..Call::get(&read_path, &client.token)
            };
            (client.conn.send(call).await, None)
        } else {
            // From the client's generator: no system call per message.
            let id = match options.message_ids {
                MessageIds::V4 => uuid::Builder::from_random_bytes(ids.random()).into_uuid(),
                MessageIds::V7 => {
                    let millis = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |since| since.as_millis() as u64);
                    uuid::Builder::from_unix_timestamp_millis(millis, &ids.random()).into_uuid()
                }
            };
            let body = format!(r#"{{"content":"{}","id":"{id}"}}"#, plan.content);
            let call = Call {
                epoch,
                ..Call::post_raw(&write_path, Some(&client.token), body.into())
            };
            (client.conn.send(call).await, Some(id))
        };
        let answered = Instant::now();
        let measured = due >= plan.measure_from;
        if measured {
            // Answers after the window's end count in its last second.
            let second = (answered - plan.measure_from)
                .as_secs()
                .min(plan.last_second);
            let ok = matches!(&result, Ok(reply) if reply.status.is_success());
            tally.at_second(usize::try_from(second).expect("seconds of a run fit"), ok);
        }
        let recorder = if read {
            &mut tally.reads
        } else {
            &mut tally.writes
        };
        let mut backoff = None;
        match result {
            Ok(reply) if reply.status.is_success() => {
                client.see(&reply);
                if measured {
                    recorder.record(answered - due, answered - sent);
                }
                if let (Some(id), true) = (id, options.verify) {
                    client.acknowledged.push(id);
                }
            }
            Ok(reply) => {
                client.see(&reply);
                if matches!(
                    reply.status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                ) {
                    backoff = Some(reply.retry_after.unwrap_or(MAX_BACKOFF).min(MAX_BACKOFF));
                }
                if measured {
                    recorder.errors += 1;
                    tally.error(reply.error_key());
                }
            }
            Err(error) => {
                if measured {
                    recorder.errors += 1;
                    tally.error(error.kind().to_owned());
                }
                // A refused connection would otherwise spin.
                backoff = Some(Duration::from_millis(100));
            }
        }
        if let Some(pause) = backoff {
            running = sleep_or_stop((Instant::now() + pause).min(plan.end), &mut stopped).await;
        }
    }
    tally.behind_schedule = pace.unsent(n, plan.measure_from, plan.until());
    (client, tally)
}

/// Reads every chat back, page by page, as its first member with the newest epoch any client
/// saw (so a replica must have caught up), and checks every acknowledged id is there.
pub(crate) async fn verify(clients: &mut [Client], chats: &Chats) -> Verification {
    let newest = clients.iter().map(|c| c.epoch).max().unwrap_or(0);
    let mut expected: HashMap<usize, Vec<Uuid>> = HashMap::new();
    for client in clients.iter() {
        expected
            .entry(client.chat)
            .or_default()
            .extend(client.acknowledged.iter().copied());
    }
    let mut verification = Verification {
        chats: chats.layout.members.len(),
        acknowledged: expected.values().map(|v| v.len() as u64).sum(),
        found: 0,
        missing: 0,
        missing_sample: Vec::new(),
    };
    for (chat, members) in chats.layout.members.iter().enumerate() {
        let Some(wanted) = expected.get(&chat) else {
            continue;
        };
        // The first member's chat path leads to this chat (see `setup`).
        let reader = &mut clients[members[0]];
        let stored = read_all(reader, newest).await;
        for id in wanted {
            if stored.contains(id) {
                verification.found += 1;
            } else {
                verification.missing += 1;
                if verification.missing_sample.len() < 10 {
                    verification.missing_sample.push(id.to_string());
                }
            }
        }
    }
    verification
}

/// Every message id of the client's chat (as far as the reads succeed).
async fn read_all(client: &mut Client, epoch: u64) -> HashSet<Uuid> {
    const PAGE: usize = 200;
    let mut ids = HashSet::new();
    let mut before: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let path = match &before {
            None => format!("{}?limit={PAGE}", client.chat_path),
            Some(id) => format!("{}?limit={PAGE}&before={id}", client.chat_path),
        };
        let call = Call {
            epoch: Some(epoch),
            ..Call::get(&path, &client.token)
        };
        let reply = match client.conn.send(call).await {
            Ok(reply) if reply.status.is_success() => reply,
            Ok(reply) if reply.status == StatusCode::SERVICE_UNAVAILABLE => {
                tokio::time::sleep(reply.retry_after.unwrap_or(MAX_BACKOFF).min(MAX_BACKOFF)).await;
                continue;
            }
            // Anything else leaves the rest unread: the missing count will say so.
            _ => break,
        };
        let page: Vec<String> = reply
            .json()
            .and_then(|v| {
                v["messages"].as_array().map(|messages| {
                    messages
                        .iter()
                        .filter_map(|m| m["id"].as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default();
        ids.extend(page.iter().filter_map(|id| Uuid::parse_str(id).ok()));
        if page.len() < PAGE {
            break;
        }
        // Oldest first: the next page is the one before this page's first message.
        before = page.first().cloned();
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_slots_interleave_the_clients_evenly() {
        let start = Instant::now();
        // 4 clients sharing 400/s: each every 10 ms, phased 2.5 ms apart.
        let dues: Vec<Duration> = (0..4)
            .map(|i| Pace::new(Some(400.0), 4, i, start).due(1, start) - start)
            .collect();
        let ms = |x: f64| Duration::from_secs_f64(x / 1000.0);
        assert_eq!(dues, vec![ms(10.0), ms(12.5), ms(15.0), ms(17.5)]);
        assert_eq!(Pace::new(None, 4, 0, start).due(7, start), start);
    }

    #[test]
    fn unsent_counts_the_slots_left_in_the_window() {
        let start = Instant::now();
        let pace = Pace::new(Some(100.0), 1, 0, start); // every 10 ms from `start`
        let ms = |x: u64| start + Duration::from_millis(x);
        // Window [100 ms, 200 ms): slots 10..=19.
        assert_eq!(pace.unsent(0, ms(100), ms(200)), 10);
        // Sent up to slot 14: 15..=19 remain.
        assert_eq!(pace.unsent(15, ms(100), ms(200)), 5);
        assert_eq!(pace.unsent(20, ms(100), ms(200)), 0);
        assert_eq!(Pace::Closed.unsent(0, ms(100), ms(200)), 0);
        // Counted, not walked: a billion slots a second over 10 s answers at once.
        let fast = Pace::new(Some(1e9), 1, 0, start);
        assert_eq!(fast.unsent(0, start, ms(10_000)), 10_000_000_000);
    }
}
