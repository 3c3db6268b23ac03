//! The generator against an in-process input node (real HTTP layer, local service, SQLite in a
//! temp directory): what it reports acknowledged is really stored and readable, errors are
//! counted by status and code, setup failures are reported.

mod server;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_loadgen::{ChatKind, LoadError, Mode, Options};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use server::{bench_config, start, ServerOptions};

fn options(url: &str) -> Options {
    Options {
        clients: 4,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
        seed_messages: 3,
        verify: true,
        request_timeout: Duration::from_secs(5),
        setup_timeout: Duration::from_secs(30),
        ..Options::new(vec![url.parse().expect("target")])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_private_writes_are_stored_and_readable() {
    let server = start(ServerOptions::default(), bench_config()).await;
    let before = server.epoch();
    let report = chat_loadgen::run(&options(&server.url)).await.expect("run");
    eprintln!("{report}");

    assert_eq!(report.errors, Default::default(), "{report}");
    assert!(report.writes.acknowledged > 0, "{report}");
    assert_eq!(report.reads.acknowledged, 0);
    assert_eq!(
        report.connections, 4,
        "one keep-alive connection per client"
    );
    let latency = report.writes.latency_ms;
    assert!(latency.p50 > 0.0 && latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    let verification = report.verification.clone().expect("verified");
    assert_eq!(verification.chats, 2);
    assert_eq!(verification.missing, 0, "{report}");
    // Warm-up writes and seeds are verified too, so at least the measured ones.
    assert!(verification.acknowledged >= report.writes.acknowledged + 2 * 3);
    // The window is under a second: one bucket, holding every acknowledged request.
    assert!(report.per_second.len() <= 2, "{report}");
    let in_seconds: u64 = report.per_second.iter().map(|s| s.acknowledged).sum();
    assert_eq!(in_seconds, report.acknowledged);
    assert_eq!(report.per_second[0].acknowledged, report.acknowledged);
    assert_eq!(verification.found, verification.acknowledged);
    // Every acknowledged message is a write in the database (setup wrote users too).
    assert!(
        server.epoch() - before >= verification.acknowledged,
        "{report}"
    );

    // A second run with the same seed on the same server: new users, and message ids that
    // never repeat the first run's (the server answers a reused id with 409).
    let short = |mut o: Options| {
        o.warmup = Duration::ZERO;
        o.duration = Duration::from_millis(300);
        o
    };
    let again = chat_loadgen::run(&short(options(&server.url)))
        .await
        .expect("run");
    assert_eq!(again.errors, Default::default(), "{again}");
    assert!(again.writes.acknowledged > 0);

    // A fixed prefix twice: the second run logs in to the first run's users and reuses their
    // groups (the node replays the group creations), so setup registers nobody new. One name
    // is taken beforehand by a plain registration (no idempotency key to replay): `409`, and
    // the generator logs in to it.
    let taken = register_raw(&server.url, "fixed-1", "loadgen-password").await;
    assert!(taken.starts_with("HTTP/1.1 201"), "{taken}");
    let mut fixed = short(options(&server.url));
    fixed.name_prefix = Some("fixed-".into());
    fixed.chat = ChatKind::Group;
    fixed.group_size = 2;
    let first = chat_loadgen::run(&fixed).await.expect("first run");
    let second = chat_loadgen::run(&fixed).await.expect("second run");
    assert_eq!(second.errors, Default::default(), "{second}");
    let verified = second.verification.expect("verified");
    assert_eq!((verified.chats, verified.missing), (2, 0));
    assert!(first.writes.acknowledged > 0 && second.writes.acknowledged > 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_reports_the_window_up_to_the_stop() {
    let server = start(ServerOptions::default(), bench_config()).await;
    let mut options = options(&server.url);
    options.duration = Duration::from_secs(30);
    let started = std::time::Instant::now();
    // Stops about 1 s into the 30 s window (setup and warm-up take about 0.3 s here).
    let stop = tokio::time::sleep(Duration::from_millis(1500));
    let report = chat_loadgen::run_until(&options, stop).await.expect("run");
    eprintln!("{report}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped, not run out"
    );
    assert!(report.stopped_early);
    assert!(report.duration_s < 1.5, "{report}");
    assert_eq!(report.errors, Default::default(), "{report}");
    assert!(report.writes.acknowledged > 0);
    assert!(report.per_second.len() <= 2, "{report}");
    let in_seconds: u64 = report.per_second.iter().map(|s| s.acknowledged).sum();
    assert_eq!(in_seconds, report.acknowledged);
    let verification = report.verification.expect("verified");
    assert_eq!(verification.missing, 0);

    let error = chat_loadgen::run_until(&options, async {})
        .await
        .expect_err("stopped in setup");
    assert!(matches!(error, LoadError::Stopped), "{error}");
    server.stop().await;
}

/// Registers `name#0001` with one plain HTTP/1.1 request; answers the raw response.
async fn register_raw(url: &str, name: &str, password: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let body = format!(r#"{{"username":"{name}","tag":"0001","password":"{password}"}}"#);
    let request = format!(
        "POST /api/register HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_group_load_at_a_fixed_rate_reads_its_writes() {
    let server = start(ServerOptions::default(), bench_config()).await;
    let mut options = options(&server.url);
    options.clients = 6;
    options.chat = ChatKind::Group;
    options.group_size = 3;
    options.mode = Mode::Mixed;
    options.rate = Some(150.0);
    options.chat_epoch = true;
    options.duration = Duration::from_secs(1);
    let report = chat_loadgen::run(&options).await.expect("run");
    eprintln!("{report}");

    assert_eq!(report.errors, Default::default(), "{report}");
    assert!(report.reads.acknowledged > 0 && report.writes.acknowledged > 0);
    // 150/s over 1 s: about 150 requests; a loaded machine may fall a little behind.
    let done = report.acknowledged + report.behind_schedule;
    assert!((120..=160).contains(&done), "{report}");
    assert!(report.acknowledged_per_s > 75.0, "{report}");
    let verification = report.verification.expect("verified");
    assert_eq!(verification.chats, 2);
    assert_eq!(verification.missing, 0);
    assert!(verification.found > 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_spread_over_every_target() {
    let server = start(
        ServerOptions {
            extra_listeners: 1,
            ..ServerOptions::default()
        },
        bench_config(),
    )
    .await;
    let mut options = options(&server.urls[0]);
    options.targets = server.urls.iter().map(|u| u.parse().unwrap()).collect();
    options.clients = 5;
    options.mode = Mode::Mixed;
    options.chat_epoch = true;
    options.duration = Duration::from_millis(500);
    let report = chat_loadgen::run(&options).await.expect("run");
    eprintln!("{report}");
    assert_eq!(report.targets.len(), 2);
    assert_eq!(report.errors, Default::default(), "{report}");
    assert_eq!(report.connections, 5);
    assert!(report.per_target.iter().all(|&n| n > 0), "{report}");
    assert_eq!(report.per_target.iter().sum::<u64>(), report.acknowledged);
    // Pairs (0,1), (2,3) and the odd client 4 with client 0: each pair spans both targets.
    let verification = report.verification.expect("verified");
    assert_eq!((verification.chats, verification.missing), (3, 0));
    server.stop().await;
}

/// What a stand-in node answers to the `n`th message post (from 0): status, body, and how
/// long it waits first.
type PostAnswer = fn(u64) -> (u16, &'static str, Duration);

/// A stand-in node: register, login and group creation succeed, message posts are answered
/// by `post`, and reads are not routed (`404`).
async fn stand_in(post: PostAnswer) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let posts = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let posts = Arc::clone(&posts);
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let posts = Arc::clone(&posts);
                async move {
                    let path = request.uri().path().to_owned();
                    let is_post = request.method() == http::Method::POST;
                    let (status, body, delay) = match path.as_str() {
                        "/api/register" => (201, r#"{"user":{}}"#, Duration::ZERO),
                        "/api/login" => (200, r#"{"user":{},"token":"t"}"#, Duration::ZERO),
                        "/api/groups" => (201, r#"{"group":{"id":"g1"}}"#, Duration::ZERO),
                        p if p.ends_with("/chat") && is_post => {
                            post(posts.fetch_add(1, Ordering::Relaxed))
                        }
                        _ => (
                            404,
                            r#"{"error":{"code":"not_found","message":"No."}}"#,
                            Duration::ZERO,
                        ),
                    };
                    // Even a zero sleep waits for the timer's next millisecond tick.
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let response = http::Response::builder()
                        .status(status)
                        .header("chat-epoch", "1")
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (url, task)
}

fn refuse_every_other(n: u64) -> (u16, &'static str, Duration) {
    if n % 2 == 0 {
        (201, r#"{"message":{}}"#, Duration::ZERO)
    } else {
        (
            403,
            r#"{"error":{"code":"forbidden","message":"No."}}"#,
            Duration::ZERO,
        )
    }
}

/// The 20th post waits half a second; the rest are answered at once.
fn stall_once(n: u64) -> (u16, &'static str, Duration) {
    let delay = if n == 20 {
        Duration::from_millis(500)
    } else {
        Duration::ZERO
    };
    (201, r#"{"message":{}}"#, delay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_counts_the_requests_a_stall_delayed() {
    let (url, task) = stand_in(stall_once).await;
    let mut options = options(&url);
    options.clients = 1;
    options.chat = ChatKind::Group;
    options.group_size = 1;
    options.seed_messages = 0;
    options.verify = false;
    options.warmup = Duration::ZERO;
    options.duration = Duration::from_secs(1);
    options.rate = Some(100.0);
    let report = chat_loadgen::run(&options).await.expect("run");
    eprintln!("{report}");
    // Slots every 10 ms; the one at 200 ms is answered at ~700 ms, and the ~50 due meanwhile
    // leave late: measured from their slots they wait up to 0.5 s, though each is served at
    // once. A closed-loop count would show one slow request.
    // A 1 s window is one bucket; the answers that came after its end are in it too.
    let seconds: Vec<u64> = report.per_second.iter().map(|s| s.acknowledged).collect();
    assert_eq!(seconds, vec![report.writes.acknowledged]);
    let (latency, service) = (report.writes.latency_ms, report.writes.service_ms);
    assert!(latency.max >= 490.0, "{report}");
    assert!(latency.p90 > 150.0, "{report}");
    assert!(service.p90 < 50.0, "{report}");
    assert!(report.writes.acknowledged >= 95, "caught up: {report}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_counted_by_status_and_code() {
    let (url, task) = stand_in(refuse_every_other).await;
    let mut options = options(&url);
    options.clients = 2;
    options.seed_messages = 0;
    options.verify = false;
    options.mode = Mode::Mixed;
    let report = chat_loadgen::run(&options).await.expect("run");
    eprintln!("{report}");
    let forbidden = report.errors.get("403 forbidden").copied().unwrap_or(0);
    let not_found = report.errors.get("404 not_found").copied().unwrap_or(0);
    assert!(forbidden > 0 && not_found > 0, "{report}");
    assert_eq!(report.writes.errors, forbidden, "{report}");
    assert_eq!(report.reads.errors, not_found, "{report}");
    assert_eq!(report.reads.acknowledged, 0);
    // Posts alternate, so about as many are acknowledged as refused (the window's edge may
    // split a client's posts from the other's by one or two).
    assert!(
        report.writes.acknowledged.abs_diff(forbidden) <= 4,
        "{report}"
    );
    assert_eq!(report.error_total(), forbidden + not_found);
    task.abort();
}

#[tokio::test]
async fn a_target_nobody_answers_fails_setup_at_its_deadline() {
    // Bind and drop: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = options(&format!("http://127.0.0.1:{port}"));
    options.setup_timeout = Duration::from_millis(600);
    let started = std::time::Instant::now();
    let error = chat_loadgen::run(&options).await.expect_err("no server");
    assert!(
        matches!(&error, LoadError::Setup { step, .. } if step == "register"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
