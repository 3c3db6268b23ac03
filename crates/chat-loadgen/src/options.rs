//! What a run does: targets, clients, timing, workload. Parsing of the command-line values
//! lives here too, so the binary stays thin and the library can be driven from tests.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::LoadError;

/// An input node's base URL: `http://host:port`, optionally with a path prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// `host` or `host:port`, sent as `Host`.
    pub authority: String,
    /// Host to connect to.
    pub host: String,
    /// Port to connect to (80 when the URL has none).
    pub port: u16,
    /// Path prepended to every route (`""` or `/prefix`, no trailing slash).
    pub prefix: String,
}

impl FromStr for Target {
    type Err = LoadError;

    fn from_str(text: &str) -> Result<Self, LoadError> {
        let bad = |why: &str| LoadError::BadTarget {
            target: text.to_owned(),
            why: why.to_owned(),
        };
        let uri: http::Uri = text.parse().map_err(|_| bad("not a URL"))?;
        // TLS would cost a dependency and CPU the generator needs; input nodes speak plain HTTP.
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(bad("only http:// is supported")),
            None => return Err(bad("say http://")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("a base URL has no query"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Target {
            authority: authority.as_str().to_owned(),
            host,
            port: authority.port_u16().unwrap_or(80),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// Which requests the clients make once set up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every request posts a message (with a client-chosen id) to the client's chat.
    Writes,
    /// Every request reads a page of the client's chat.
    Reads,
    /// Each request is a read with probability `read_fraction`, else a write.
    Mixed,
}

/// The kind of chat each client writes to and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    /// Clients in pairs; each posts to the private chat with its partner.
    Private,
    /// Clients in groups of `group_size`; each posts to its group's chat.
    Group,
}

/// How clients choose the ids of the messages they send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MessageIds {
    /// UUIDv7: time-ordered, as the browser client and the server choose them, so every
    /// node's message index grows at its right edge.
    V7,
    /// UUIDv4: random, as a client that ignores the advice in docs/api.md would; each write
    /// then dirties a page of the message index of its own.
    V4,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Input nodes; client `i` talks only to `targets[i % len]`.
    pub targets: Vec<Target>,
    /// Concurrent users, each with its own account, token and keep-alive connection.
    pub clients: usize,
    /// Length of the measured window.
    pub duration: Duration,
    /// Load before the measured window, not recorded (connections warm, caches filled).
    pub warmup: Duration,
    /// Which requests to make.
    pub mode: Mode,
    /// Share of reads in [`Mode::Mixed`], 0 to 1.
    pub read_fraction: f64,
    /// Total offered rate in requests per second over all clients (open loop); `None` runs
    /// each client back to back (closed loop, the maximum throughput).
    pub rate: Option<f64>,
    /// Send back the largest `Chat-Epoch` seen, so every read sees the client's own writes.
    pub chat_epoch: bool,
    /// The kind of message ids the clients choose.
    pub message_ids: MessageIds,
    /// Private chats or group chats.
    pub chat: ChatKind,
    /// Members per group (the last group may be smaller).
    pub group_size: usize,
    /// Messages posted to each chat during setup, so reads return something.
    pub seed_messages: usize,
    /// Messages per chat read (`limit`, at most 200).
    pub page_size: usize,
    /// Bytes of each message's content.
    pub message_bytes: usize,
    /// Start of every username (a random one when `None`), so runs do not collide.
    pub name_prefix: Option<String>,
    /// The password of every user (8 to 72 bytes).
    pub password: String,
    /// Setup requests in flight at once (register and login cost a bcrypt each).
    pub setup_concurrency: usize,
    /// How long setup may take, including waits for login rate limits.
    pub setup_timeout: Duration,
    /// Per-request timeout (connect included); a timed-out request counts as an error.
    pub request_timeout: Duration,
    /// After the run, read every chat back and check each acknowledged write is there.
    pub verify: bool,
    /// Seed of the per-client random choices (read or write, open-loop phase).
    pub seed: u64,
}

impl Options {
    /// Defaults for `targets`: 10 clients writing private messages, closed loop, 10 s after
    /// 2 s of warm-up.
    pub fn new(targets: Vec<Target>) -> Self {
        Options {
            targets,
            clients: 10,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            mode: Mode::Writes,
            read_fraction: 0.5,
            rate: None,
            chat_epoch: false,
            message_ids: MessageIds::V7,
            chat: ChatKind::Private,
            group_size: 10,
            seed_messages: 10,
            page_size: 50,
            message_bytes: 64,
            name_prefix: None,
            password: "loadgen-password".to_owned(),
            setup_concurrency: 8,
            setup_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            verify: false,
            seed: 1,
        }
    }

    /// Checks the values against each other and the API's input rules.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |why: String| Err(LoadError::BadOptions(why));
        if self.targets.is_empty() {
            return bad("give at least one --target".into());
        }
        if self.clients == 0 {
            return bad("--clients must be at least 1".into());
        }
        if self.chat == ChatKind::Private && self.clients < 2 {
            return bad("private chats need at least 2 clients".into());
        }
        if self.group_size == 0 {
            return bad("--group-size must be at least 1".into());
        }
        if self.duration.is_zero() {
            return bad("--duration must be more than 0".into());
        }
        if !(0.0..=1.0).contains(&self.read_fraction) {
            return bad("--read-fraction must be between 0 and 1".into());
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return bad("--rate must be a positive number".into());
            }
        }
        if !(1..=200).contains(&self.page_size) {
            return bad("--page-size must be 1 to 200".into());
        }
        if !(1..=4000).contains(&self.message_bytes) {
            return bad("--message-bytes must be 1 to 4000".into());
        }
        if !(8..=72).contains(&self.password.len()) {
            return bad("--password must be 8 to 72 bytes".into());
        }
        if self.setup_concurrency == 0 {
            return bad("--setup-concurrency must be at least 1".into());
        }
        if let Some(prefix) = &self.name_prefix {
            // The index is appended; usernames are at most 32 characters.
            let longest = format!("{prefix}{}", self.clients - 1);
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
            if longest.len() > 32 || !prefix.chars().all(allowed) {
                return bad(format!(
                    "--name-prefix {prefix:?}: usernames are 1 to 32 letters, digits, _ - ."
                ));
            }
        }
        Ok(())
    }
}

/// Parses `250ms`, `10s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (say 500ms, 10s or 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit {other:?} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_an_http_base_url() {
        let t: Target = "http://127.0.0.1:8081".parse().unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.prefix.as_str()),
            ("127.0.0.1", 8081, "")
        );
        assert_eq!(t.authority, "127.0.0.1:8081");
        let t: Target = "http://chat.example/front/".parse().unwrap();
        assert_eq!((t.port, t.prefix.as_str()), (80, "/front"));
        assert_eq!(t.to_string(), "http://chat.example/front");
        let t: Target = "http://[::1]:9000".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        for bad in [
            "https://x:1",
            "127.0.0.1:8081",
            "http://x:1/?a=b",
            "nonsense",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn options_are_checked() {
        let target = "http://127.0.0.1:1".parse().unwrap();
        let good = Options::new(vec![target]);
        assert!(good.validate().is_ok());
        let cases: Vec<fn(&mut Options)> = vec![
            |o| o.targets.clear(),
            |o| o.clients = 1,
            |o| o.rate = Some(0.0),
            |o| o.page_size = 201,
            |o| o.read_fraction = 1.5,
            |o| o.name_prefix = Some("has space".into()),
            |o| o.name_prefix = Some("x".repeat(32)),
            |o| o.password = "short".into(),
        ];
        for (i, change) in cases.into_iter().enumerate() {
            let mut options = good.clone();
            change(&mut options);
            assert!(options.validate().is_err(), "case {i}");
        }
    }
}
