//! Round-trip latency and one-way throughput between two transports on loopback.
//!
//! Prints figures; never fails on slowness. Run: `cargo bench -p chat-transport --bench transport`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chat_secret::{ClusterSecret, KeyRing, Purpose};
use chat_transport::{Transport, TransportConfig, TransportEvent, TransportHandle};
use tokio::sync::mpsc::Receiver;

const ROUND_TRIPS: usize = 10_000;
const WARMUP_ROUND_TRIPS: usize = 1_000;
/// How long the receiver waits for one more message before it reports what arrived.
const STALL: Duration = Duration::from_secs(3);

type Events = Receiver<TransportEvent>;

/// Whether the wire is sealed with the cluster secret, and how each figure is labelled.
#[derive(Clone, Copy)]
enum Wire {
    Clear,
    Sealed,
}

impl Wire {
    fn keys(self) -> Option<KeyRing> {
        match self {
            Wire::Clear => None,
            Wire::Sealed => Some(ClusterSecret::from_parts([7; 32], None).keys(Purpose::Wire)),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Wire::Clear => "clear",
            Wire::Sealed => "sealed",
        }
    }
}

fn config(node_id: u64, queue: usize, wire: Wire) -> TransportConfig {
    let mut config = TransportConfig::new(node_id, "tcp://127.0.0.1:*").with_security(wire.keys());
    config.send_queue = queue;
    config.event_queue = queue.min(65_536);
    // Twice the run: ZeroMQ learns what the peer has read only every so many messages, so a
    // pipe sized to the run exactly could refuse its last few (seen as "pipe 1" or "pipe 3").
    let hwm = i32::try_from(queue.saturating_mul(2)).unwrap_or(i32::MAX);
    config.send_hwm = hwm;
    config.recv_hwm = hwm;
    config
}

/// Two transports connected both ways, links up and, on a sealed wire, the sessions of both
/// directions established: a link shakes hands once, so the figures are the steady state
/// (before, every message of a throughput run waited behind the first HELLO and was then
/// sealed in one burst when the WELCOME came back, which measured that burst).
async fn pair(queue: usize, wire: Wire) -> ((TransportHandle, Events), (TransportHandle, Events)) {
    let (a, mut a_events) = Transport::start(config(1, queue, wire)).expect("start a");
    let (b, mut b_events) = Transport::start(config(2, queue, wire)).expect("start b");
    a.connect(2, b.local_endpoint().to_owned())
        .expect("connect");
    b.connect(1, a.local_endpoint().to_owned())
        .expect("connect");
    wait_link_up(&mut a_events, 2).await;
    wait_link_up(&mut b_events, 1).await;
    for (from, to, to_events) in [(&a, 2, &mut b_events), (&b, 1, &mut a_events)] {
        from.send(to, b"hello".to_vec()).expect("send");
        assert!(
            next_message(to_events).await.is_some(),
            "the first message to {to} did not arrive"
        );
    }
    ((a, a_events), (b, b_events))
}

async fn wait_link_up(events: &mut Events, peer: u64) {
    loop {
        match tokio::time::timeout(STALL, events.recv()).await {
            Ok(Some(TransportEvent::LinkUp { peer: up })) if up == peer => return,
            Ok(Some(_)) => {}
            other => panic!("link to {peer} did not come up: {other:?}"),
        }
    }
}

async fn next_message(events: &mut Events) -> Option<Vec<u8>> {
    loop {
        match tokio::time::timeout(STALL, events.recv()).await {
            Ok(Some(TransportEvent::Received { payload, .. })) => return Some(payload),
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn round_trip_latency(wire: Wire) {
    let label = wire.label();
    let ((a, mut a_events), (b, mut b_events)) = pair(4096, wire).await;
    let echo = tokio::spawn(async move {
        while let Some(event) = b_events.recv().await {
            if let TransportEvent::Received { from, payload } = event {
                if b.send(from, payload).is_err() {
                    return;
                }
            }
        }
    });

    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for round in 0..WARMUP_ROUND_TRIPS + ROUND_TRIPS {
        let payload = (round as u64).to_be_bytes().to_vec();
        let started = Instant::now();
        a.send(2, payload.clone()).expect("send");
        match next_message(&mut a_events).await {
            Some(echoed) if echoed == payload => {}
            other => {
                println!("bench round_trip: lost or wrong echo in round {round}: {other:?}");
                return;
            }
        }
        if round >= WARMUP_ROUND_TRIPS {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "bench round_trip_latency_8B_median ({label}): {:.1} us",
        micros(percentile(&samples, 0.5))
    );
    println!(
        "bench round_trip_latency_8B_p99 ({label}): {:.1} us",
        micros(percentile(&samples, 0.99))
    );
    println!(
        "bench round_trip_latency_8B_mean ({label}): {:.1} us",
        micros(mean)
    );
    a.shutdown().await;
    echo.abort();
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

async fn one_way_throughput(payload_bytes: usize, messages: usize, wire: Wire) {
    let label = wire.label();
    let ((a, _a_events), (b, mut b_events)) = pair(messages, wire).await;
    let payload = vec![0x5a; payload_bytes];

    let cpu_before = thread_cpu_times();
    let started = Instant::now();
    let sender = {
        let a = a.clone();
        std::thread::Builder::new()
            .name("bench-sender".into())
            .spawn(move || {
                let cpu_before = thread_cpu();
                for _ in 0..messages {
                    if a.send(2, payload.clone()).is_err() {
                        break;
                    }
                }
                thread_cpu().saturating_sub(cpu_before)
            })
            .expect("spawn the sender")
    };
    let mut received = 0usize;
    let mut finished = started;
    while received < messages {
        if next_message(&mut b_events).await.is_none() {
            break;
        }
        received += 1;
        finished = Instant::now();
    }
    // The sender thread has ended by the second reading: its own time is added.
    let sender_cpu = sender.join().unwrap_or_default();
    // The transports name their socket threads `zmq-node-<id>`: a is node 1, b node 2.
    let socket_threads = ["zmq-node-1", "zmq-node-2"];
    let (mut sockets, mut other) = ([Duration::ZERO; 2], Duration::ZERO);
    for (task, (name, after)) in thread_cpu_times() {
        let spent = after.saturating_sub(cpu_before.get(&task).map_or(Duration::ZERO, |(_, b)| *b));
        match socket_threads.iter().position(|socket| *socket == name) {
            Some(index) => sockets[index] += spent,
            None => other += spent,
        }
    }
    let cpu = sockets[0] + sockets[1] + other + sender_cpu;
    let seconds = finished.duration_since(started).as_secs_f64();
    let rate = received as f64 / seconds;
    let stats = a.stats();
    let per_message = |cpu: Duration| micros(cpu) / received.max(1) as f64;
    println!(
        "bench one_way_throughput_{payload_bytes}B ({label}): {rate:.0} msg/s ({:.1} MB/s, CPU {:.2} us/msg, {received}/{messages} received, dropped queue {} pipe {})",
        rate * payload_bytes as f64 / 1e6,
        per_message(cpu),
        stats.dropped_queue_full,
        stats.dropped_pipe_full,
    );
    // Where the CPU goes: the sealing happens on the sender's socket thread, the opening on
    // the receiver's; "other" is the consumer, both ZeroMQ I/O threads and the runtime.
    println!(
        "bench one_way_throughput_{payload_bytes}B ({label}) CPU by thread: sending socket thread {:.2} us/msg, receiving socket thread {:.2}, sender {:.2}, other {:.2}",
        per_message(sockets[0]),
        per_message(sockets[1]),
        per_message(sender_cpu),
        per_message(other),
    );
    if received < messages {
        // Say where the rest went, so a loss is a finding and not a mystery.
        println!("bench one_way_throughput_{payload_bytes}B ({label}) lost: sender {stats:?}");
        println!(
            "bench one_way_throughput_{payload_bytes}B ({label}) lost: receiver {:?}",
            b.stats()
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// The cipher alone: AES-256-GCM (ring's, as the sealed wire uses) sealing and opening
/// `payload_bytes` in place with a 17-byte header as associated data, as a DATA frame is. The
/// transport's sealed cost per message cannot go below these two figures.
fn raw_aead(payload_bytes: usize, rounds: u64) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).expect("32-byte key"));
    let header = [3u8; 17];
    let nonce = |counter: u64| {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_le_bytes());
        Nonce::assume_unique_for_key(nonce)
    };
    let mut body = vec![0x5a; payload_bytes];
    let mut tags = Vec::with_capacity(rounds as usize);
    let started = Instant::now();
    for counter in 0..rounds {
        let tag = key
            .seal_in_place_separate_tag(nonce(counter), Aad::from(&header), &mut body)
            .expect("seal");
        tags.push(tag);
    }
    let seal = started.elapsed();
    // Open the last frame sealed, over and over, from a fresh copy each time (as the
    // receiver copies the ciphertext into the payload's buffer).
    let sealed = body.clone();
    let last = *tags.last().expect("one round at least");
    let started = Instant::now();
    for _ in 0..rounds {
        let mut payload = sealed.clone();
        key.open_in_place_separate_tag(
            nonce(rounds - 1),
            Aad::from(&header),
            last,
            &mut payload,
            0..,
        )
        .expect("open");
        std::hint::black_box(&payload);
    }
    let open = started.elapsed();
    println!(
        "bench raw_aead_{payload_bytes}B: seal {:.2} us, open {:.2} us (AES-256-GCM, ring, one core)",
        micros(seal) / rounds as f64,
        micros(open) / rounds as f64,
    );
}

/// Name and CPU time so far of every thread of this process, by thread id (the first field
/// of each thread's `schedstat`): with both transports, the sender and the receiver in one
/// process, the CPU a message costs whatever else shares the cores. Empty where `/proc` has
/// no such files.
fn thread_cpu_times() -> HashMap<String, (String, Duration)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return HashMap::new();
    };
    tasks
        .flatten()
        .map(|task| {
            let path = task.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let cpu = schedstat_cpu(&path.join("schedstat"));
            let id = task.file_name().to_string_lossy().into_owned();
            (id, (name.trim().to_owned(), cpu))
        })
        .collect()
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    schedstat_cpu(std::path::Path::new("/proc/thread-self/schedstat"))
}

fn schedstat_cpu(path: &std::path::Path) -> Duration {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Whether the run named `name` (as printed, e.g. `one_way_throughput_100B (sealed)`) was
/// asked for: every one without arguments, else those whose name contains one of them
/// (`cargo bench -p chat-transport --bench transport -- 100B`, `-- sealed`); cargo's own
/// `--bench` flag is ignored.
fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    filters.is_empty() || filters.iter().any(|filter| name.contains(filter.as_str()))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        // Clear and sealed alternate, so a load change on the machine hits both alike.
        for (payload_bytes, rounds) in [(100, 1_000_000), (4096, 100_000)] {
            if selected(&format!("raw_aead_{payload_bytes}B")) {
                raw_aead(payload_bytes, rounds);
            }
        }
        for wire in [Wire::Clear, Wire::Sealed] {
            if selected(&format!("round_trip_latency_8B ({})", wire.label())) {
                round_trip_latency(wire).await;
            }
        }
        for wire in [Wire::Clear, Wire::Sealed, Wire::Clear, Wire::Sealed] {
            if selected(&format!("one_way_throughput_100B ({})", wire.label())) {
                one_way_throughput(100, 200_000, wire).await;
            }
        }
        for wire in [Wire::Clear, Wire::Sealed] {
            if selected(&format!("one_way_throughput_4096B ({})", wire.label())) {
                one_way_throughput(4096, 50_000, wire).await;
            }
        }
    });
}
