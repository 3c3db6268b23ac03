//! The end-to-end test of the package: a Debian 12 tree (debootstrap, cached outside the
//! clone), booted with `systemd-nspawn --boot`, commands run inside with `nsenter`. It does what
//! an operator does, as the README's "Install as a service" section tells it, and checks what
//! they would see: `apt-get install`, the bootstrap and nameserver active, five nodes started by
//! `systemctl start` with their roles in `systemctl status`, the election in `journalctl`, the
//! writer stopped and started, a node SIGKILLed and restarted by systemd, the units' exposure
//! scores, then remove and purge.
//!
//! The container boots with `--volatile=overlay` (the cached tree read-only under a tmpfs), so
//! the cache is never changed and nothing is left to clean but the process, and with
//! `--private-network`, so its ports (the packaged defaults) cannot meet the host's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::system::{self, output, status};

/// The Debian release the package is for.
const SUITE: &str = "bookworm";
/// Packages the tree is made with: systemd to boot, dbus for systemctl, curl for the chat
/// steps, man-db so `systemd-analyze verify` can check the units' man: links.
const INCLUDES: &str = "systemd,systemd-sysv,dbus,curl,man-db";
/// Where the tree is cached (outside the clone, so CI reuses it); `CHAT_SYSTEM_TEST_CACHE`
/// overrides.
const DEFAULT_CACHE: &str = "/var/cache/chat-system-test";
/// Where the package's directory is mounted inside the container.
const PACKAGE_MOUNT: &str = "/mnt/chat-system";
/// The nodes started, as in the README: `systemctl start chat-node@{1..5}`.
const NODES: [u32; 5] = [1, 2, 3, 4, 5];
/// The highest exposure score `systemd-analyze security` may give a unit.
const MAX_EXPOSURE: f64 = 2.0;
/// How long a cluster change (a new writer, a restart) may take before the test fails; far
/// above what it needs, so a loaded machine does not fail it.
const SETTLE: Duration = Duration::from_secs(60);

/// Runs the whole scenario with `deb` installed in a fresh container.
pub(crate) fn end_to_end(deb: &Path) -> Result<(), String> {
    if !running_as_root() {
        return Err(
            "the container test needs root (debootstrap, systemd-nspawn); run it as root".into(),
        );
    }
    let started = Instant::now();
    let tree = cached_tree()?;
    let deb = deb
        .canonicalize()
        .map_err(|e| format!("no package at {}: {e}", deb.display()))?;
    let log = deb.with_extension("container.log");
    let container = Container::boot(&tree, &deb, &log)?;
    eprintln!(
        "xtask e2e: container booted in {:.1} s (console log: {})",
        started.elapsed().as_secs_f64(),
        log.display()
    );
    let file_name = deb
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let outcome = scenario(&container, &format!("{PACKAGE_MOUNT}/{file_name}"));
    container.stop();
    match &outcome {
        Ok(()) => eprintln!(
            "xtask e2e: passed in {:.0} s",
            started.elapsed().as_secs_f64()
        ),
        Err(_) => eprintln!(
            "xtask e2e: failed; the container's console is in {}",
            log.display()
        ),
    }
    outcome
}

fn scenario(container: &Container, deb: &str) -> Result<(), String> {
    step("apt-get install the package", || {
        container
            .run(&format!("apt-get install -y -q {deb}"))
            .map(drop)
    })?;
    step(
        "bootstrap and nameserver active, user, secret and port reservation made",
        || {
            let states = container.run("systemctl is-active chat-bootstrap chat-nameserver")?;
            expect(
                states.split_whitespace().all(|state| state == "active"),
                format!("after install: {states}"),
            )?;
            container.run("id chat-system")?;
            let key = container.run("stat -c '%a %U:%G' /etc/chat-system/cluster.key")?;
            expect(
                key.trim() == "640 root:chat-system",
                format!("cluster.key is {key}"),
            )?;
            let secret = container.run("cat /etc/chat-system/cluster.key")?;
            expect(
                secret.len() == 65
                    && secret.ends_with('\n')
                    && secret.trim_end().chars().all(|c| c.is_ascii_hexdigit()),
                format!("cluster.key is not one line of 64 hex digits: {secret:?}"),
            )?;
            // The container has its own network namespace, whose /proc/sys/net is writable.
            let reserved = container.run("cat /proc/sys/net/ipv4/ip_local_reserved_ports")?;
            expect(
                reserved.trim() == "45997-47999,50000-50999",
                format!(
                    "the default ports are not reserved from the ephemeral range: {reserved:?}"
                ),
            )
        },
    )?;

    let units: Vec<String> = NODES.iter().map(|id| node_unit(*id)).collect();
    step(
        "systemctl start chat-node@{1..5} returns with every node active and in a role",
        || {
            container.run(&format!("systemctl start {}", units.join(" ")))?;
            for id in NODES {
                let (state, status) = container.unit_state(&node_unit(id))?;
                expect(state == "active", format!("chat-node@{id} is {state}"))?;
                expect(
                    role_of(&status).is_some(),
                    format!("chat-node@{id} shows no role in its status: {status:?}"),
                )?;
                println!("  chat-node@{id}: {status}");
            }
            Ok(())
        },
    )?;
    step(
        "journalctl -u chat-node@N SUBSYSTEM=election tells the election",
        || {
            let mut told = 0;
            for id in NODES {
                let story = container.run(&format!(
                    "journalctl -q --no-pager -o cat -u chat-node@{id} SUBSYSTEM=election"
                ))?;
                if !story.trim().is_empty() {
                    told += 1;
                    if id == 4 {
                        println!("  chat-node@4's election:\n{}", indent(&story));
                    }
                }
            }
            expect(
                told > 0,
                "no node logged its election with SUBSYSTEM=election",
            )?;
            let tagged = container.run("journalctl -q --no-pager -o cat -t chat-node -n 1")?;
            expect(
                !tagged.trim().is_empty(),
                "no journal entry carries SYSLOG_IDENTIFIER=chat-node",
            )
        },
    )?;
    step("chat through the nameserver (hook)", || {
        chat_hook::before_restart(container)
    })?;

    step(
        "stop the writer: another node takes over; start it: the cluster serves again",
        || {
            let writer = container.writer()?;
            println!("  writer: chat-node@{writer}");
            container.run(&format!("systemctl stop {}", node_unit(writer)))?;
            // Until writes need a majority, a node the stop cut off elects itself too: any
            // other writer will do here; the restart below must then leave exactly one.
            let successor = container.poll("another writer", || {
                Ok(container.writers()?.into_iter().find(|id| *id != writer))
            })?;
            println!("  new writer: chat-node@{successor}");
            container.run(&format!("systemctl start {}", node_unit(writer)))?;
            container.poll("every node active in a role, one writer", || {
                container.settled().map(|ok| ok.then_some(()))
            })?;
            chat_hook::after_restart(container)
        },
    )?;

    step("systemctl kill -s KILL a node: systemd restarts it", || {
        let writer = container.writer()?;
        let victim = NODES
            .into_iter()
            .find(|id| *id != writer)
            .expect("five nodes, one writer");
        let unit = node_unit(victim);
        let before = container.run(&format!("systemctl show -p MainPID -p NRestarts {unit}"))?;
        container.run(&format!("systemctl kill -s KILL {unit}"))?;
        container.poll("the killed node restarted and active", || {
            let now = container.run(&format!("systemctl show -p MainPID -p NRestarts {unit}"))?;
            let (state, _) = container.unit_state(&unit)?;
            Ok((now != before && state == "active" && !now.contains("MainPID=0\n")).then_some(()))
        })?;
        println!("  chat-node@{victim}: {}", container.unit_state(&unit)?.1);
        Ok(())
    })?;

    step("a node started before the bootstrap waits for it", || {
        // Node 6 is new: nothing cached, so it must reach the bootstrap to learn neighbours.
        container.run("systemctl stop chat-bootstrap")?;
        container.run("systemctl start --no-block chat-node@6")?;
        let waiting = container.poll("node 6 waiting for the bootstrap", || {
            let said = container.run(
                "journalctl -q --no-pager -o cat -u chat-node@6 | grep 'waiting for it' || true",
            )?;
            let (state, _) = container.unit_state("chat-node@6.service")?;
            Ok((state == "activating" && !said.trim().is_empty()).then_some(said))
        })?;
        println!("  chat-node@6 (activating): {}", waiting.trim());
        container.run("systemctl start chat-bootstrap")?;
        container.poll("node 6 active in a role once the bootstrap is back", || {
            let (state, status) = container.unit_state("chat-node@6.service")?;
            Ok((state == "active" && role_of(&status).is_some()).then_some(()))
        })?;
        println!(
            "  chat-node@6: {}",
            container.unit_state("chat-node@6.service")?.1
        );
        container.run("systemctl stop chat-node@6").map(drop)
    })?;

    step("no watchdog timeout", || {
        let timeouts = container
            .run("journalctl -q --no-pager -u 'chat-*' | grep -ci 'watchdog timeout' || true")?;
        expect(
            timeouts.trim() == "0",
            format!("{} watchdog timeouts in the journal", timeouts.trim()),
        )
    })?;

    step("systemd-analyze security and verify", || {
        for unit in [
            "chat-node@1.service",
            "chat-bootstrap.service",
            "chat-nameserver.service",
        ] {
            let report = container.run(&format!("systemd-analyze security --no-pager {unit}"))?;
            let score = exposure(&report)
                .ok_or_else(|| format!("no overall exposure level for {unit}:\n{report}"))?;
            println!("  {unit}: exposure {score:.1}");
            expect(
                score <= MAX_EXPOSURE,
                format!("{unit} scores {score}, above {MAX_EXPOSURE}"),
            )?;
        }
        // A template is verified through an instance file.
        let verified = container.run(
            "cp /lib/systemd/system/chat-node@.service /run/chat-node@1.service && \
             systemd-analyze verify /run/chat-node@1.service \
               /lib/systemd/system/chat-bootstrap.service \
               /lib/systemd/system/chat-nameserver.service 2>&1",
        )?;
        let complaints: Vec<&str> = verified
            .lines()
            .filter(|line| line.contains("chat-"))
            .collect();
        expect(
            complaints.is_empty(),
            format!("systemd-analyze verify: {}", complaints.join("\n")),
        )
    })?;

    step("apt-get remove keeps configuration and data", || {
        container.run("apt-get remove -y -q chat-system")?;
        let active = container.run("systemctl list-units --no-legend --state=active 'chat-*'")?;
        expect(
            active.trim().is_empty(),
            format!("still active after remove: {active}"),
        )?;
        container
            .run(
                "test ! -e /usr/bin/chat-node && test -f /etc/chat-system/node.toml && \
             test -f /etc/chat-system/cluster.key && test -d /var/lib/chat-system/node-1 && \
             test -d /var/lib/chat-bootstrap",
            )
            .map(drop)
    })?;
    step("apt-get purge removes them", || {
        container.run("apt-get purge -y -q chat-system")?;
        container
            .run(
                "test ! -e /etc/chat-system && test ! -e /var/lib/chat-system && \
             test ! -e /var/lib/chat-bootstrap && ! dpkg -s chat-system >/dev/null 2>&1",
            )
            .map(drop)
    })
}

/// Chat through the nameserver as a script would: register, log in and send messages with
/// `curl -L http://127.0.0.1:9999/...` (the nameserver answers 307 to a live input node, and
/// curl repeats the POST there; `--location-trusted` because curl drops the `Authorization`
/// header on a redirect to another port), and after the writer's restart check that every acknowledged
/// message is still there. Every POST carries a key or an id, so curl's retries (on 503 while
/// roles change) never write twice.
mod chat_hook {
    use super::Container;

    const FRONT: &str = "http://127.0.0.1:9999";
    /// Where the token and the epoch are kept between the two steps (inside the container).
    const STATE: &str = "/root/e2e-chat";
    const FIRST_MESSAGE: &str = "0b0d5d2e-6f35-4f43-9f38-5d1d0e2c0001";
    const SECOND_MESSAGE: &str = "0b0d5d2e-6f35-4f43-9f38-5d1d0e2c0002";

    fn curl(extra: &str) -> String {
        format!(
            "curl -fsS --location-trusted --retry 20 --retry-all-errors --retry-delay 1 \
             -H 'content-type: application/json' {extra}"
        )
    }

    fn field(json: &str, key: &str) -> Option<String> {
        let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
        let end = json[start..].find('"')? + start;
        Some(json[start..end].to_owned())
    }

    fn epoch(json: &str) -> u64 {
        json.find("\"epoch\":")
            .map(|at| &json[at + 8..])
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0)
    }

    pub(super) fn before_restart(container: &Container) -> Result<(), String> {
        for (name, tag) in [("alice", "1234"), ("bob", "5678")] {
            let user = container.run(&curl(&format!(
                "-H 'Idempotency-Key: e2e-register-{name}' \
                 -d '{{\"username\":\"{name}\",\"tag\":\"{tag}\",\"password\":\"password123\"}}' \
                 {FRONT}/api/register"
            )))?;
            println!("  registered: {}", user.trim());
        }
        let login = container.run(&curl(&format!(
            "-d '{{\"username\":\"alice\",\"tag\":\"1234\",\"password\":\"password123\"}}' \
             {FRONT}/api/login"
        )))?;
        let token = field(&login, "token").ok_or(format!("no token in {login}"))?;
        container.run(&format!("echo '{token}' > {STATE}"))?;
        let sent = container.run(&curl(&format!(
            "-H 'Authorization: Bearer {token}' \
             -d '{{\"id\":\"{FIRST_MESSAGE}\",\"content\":\"hello bob\"}}' \
             {FRONT}/api/users/bob/5678/chat"
        )))?;
        if !sent.contains(FIRST_MESSAGE) {
            return Err(format!("the message was not acknowledged: {sent}"));
        }
        println!("  alice -> bob acknowledged: {FIRST_MESSAGE}");
        Ok(())
    }

    pub(super) fn after_restart(container: &Container) -> Result<(), String> {
        let token = container.run(&format!("cat {STATE}"))?.trim().to_owned();
        let sent = container.run(&curl(&format!(
            "-H 'Authorization: Bearer {token}' \
             -d '{{\"id\":\"{SECOND_MESSAGE}\",\"content\":\"still here?\"}}' \
             {FRONT}/api/users/bob/5678/chat"
        )))?;
        if !sent.contains(SECOND_MESSAGE) {
            return Err(format!("the new message was not acknowledged: {sent}"));
        }
        // Read-your-writes from whichever input node the nameserver picks.
        let chat = container.run(&format!(
            "curl -fsS --location-trusted --retry 20 --retry-all-errors --retry-delay 1 \
             -H 'Authorization: Bearer {token}' -H 'Chat-Epoch: {}' \
             {FRONT}/api/users/bob/5678/chat",
            epoch(&sent)
        ))?;
        for id in [FIRST_MESSAGE, SECOND_MESSAGE] {
            if chat.matches(id).count() != 1 {
                return Err(format!("message {id} is not in the chat once: {chat}"));
            }
        }
        println!("  after the writer's restart both messages are there, once each");
        Ok(())
    }
}

/// Runs one named step, printing its name and duration.
fn step(name: &str, body: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    println!("xtask e2e: {name}");
    let started = Instant::now();
    let outcome = body().map_err(|error| format!("{name}: {error}"));
    println!(
        "xtask e2e:   {} in {:.1} s",
        if outcome.is_ok() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    outcome
}

fn expect(condition: bool, failure: impl Into<String>) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(failure.into())
    }
}

fn node_unit(id: u32) -> String {
    format!("chat-node@{id}.service")
}

/// The role a node's STATUS= line names, if any.
fn role_of(status: &str) -> Option<&'static str> {
    ["writer", "replica", "input", "forwarder"]
        .into_iter()
        .find(|role| words(status).any(|word| word == *role))
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
}

/// `→ Overall exposure level for chat-node@1.service: 1.1 OK 🙂` → 1.1.
fn exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|line| line.contains("Overall exposure level"))?;
    line.rsplit_once(": ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The cached Debian tree, made with debootstrap on first use (or when [`INCLUDES`] changed).
fn cached_tree() -> Result<PathBuf, String> {
    let cache = std::env::var_os("CHAT_SYSTEM_TEST_CACHE")
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
    let tree = cache.join(format!("{SUITE}-minbase"));
    let marker = tree.join(".chat-system-test-tree");
    if std::fs::read_to_string(&marker).is_ok_and(|made_with| made_with == INCLUDES) {
        return Ok(tree);
    }
    let mirror = apt_mirror()?;
    eprintln!(
        "xtask e2e: debootstrap {SUITE} from {mirror} into {} (once; later runs reuse it)",
        tree.display()
    );
    let partial = cache.join(format!("{SUITE}-minbase.partial"));
    for stale in [&partial, &tree] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .map_err(|e| format!("cannot remove {}: {e}", stale.display()))?;
        }
    }
    std::fs::create_dir_all(&cache)
        .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    status(
        Command::new(system::find_program("debootstrap").unwrap_or_else(|| "debootstrap".into()))
            .args(["--variant=minbase", &format!("--include={INCLUDES}"), SUITE])
            .arg(&partial)
            .arg(&mirror),
    )?;
    std::fs::write(partial.join(".chat-system-test-tree"), INCLUDES)
        .map_err(|e| format!("cannot mark the tree: {e}"))?;
    std::fs::rename(&partial, &tree)
        .map_err(|e| format!("cannot move the tree into place: {e}"))?;
    Ok(tree)
}

/// The machine's own Debian mirror for [`SUITE`], from /etc/apt/sources.list and
/// sources.list.d (one-line and deb822 formats), so the test fetches from wherever this
/// machine is configured to.
fn apt_mirror() -> Result<String, String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        more.sort();
        files.extend(more);
    }
    files
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .find_map(|text| mirror_in(&text))
        .ok_or_else(|| {
            format!("no apt source for {SUITE} in /etc/apt/sources.list or sources.list.d")
        })
}

/// The first URI serving [`SUITE`] itself (not -updates or -security) in a sources file.
fn mirror_in(text: &str) -> Option<String> {
    // One-line format: `deb [options] URI SUITE COMPONENTS`.
    let one_line = text.lines().find_map(|line| {
        let line = line.trim();
        let rest = line.strip_prefix("deb ")?;
        let rest = match rest.trim_start().strip_prefix('[') {
            Some(options) => options.split_once(']')?.1,
            None => rest,
        };
        let mut fields = rest.split_whitespace();
        let (uri, suite) = (fields.next()?, fields.next()?);
        (suite == SUITE).then(|| uri.to_owned())
    });
    // deb822 format: paragraphs with `URIs:` and `Suites:`.
    one_line.or_else(|| {
        text.split("\n\n").find_map(|paragraph| {
            let field = |name: &str| {
                paragraph.lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_owned())
                })
            };
            let types = field("Types").unwrap_or_default();
            let suites = field("Suites")?;
            let uri = field("URIs")?;
            (types.split_whitespace().any(|t| t == "deb")
                && suites.split_whitespace().any(|s| s == SUITE))
            .then(|| uri.split_whitespace().next().unwrap_or_default().to_owned())
        })
    })
}

/// A booted container; stopped by [`Container::stop`] or, on any early exit, when dropped.
struct Container {
    nspawn: Option<Child>,
    /// The container's PID 1 (its systemd) as seen from the host: what nsenter enters.
    init_pid: u32,
}

impl Container {
    fn boot(tree: &Path, deb: &Path, log: &Path) -> Result<Self, String> {
        let package_dir = deb.parent().expect("a package file has a directory");
        let console = std::fs::File::create(log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let console_err = console
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
        let nspawn = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(tree)
            .args([
                "--volatile=overlay",
                "--boot",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--console=read-only",
                "--quiet",
                &format!("--machine=chat-e2e-{}", std::process::id()),
            ])
            .arg(format!(
                "--bind-ro={}:{PACKAGE_MOUNT}",
                package_dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .spawn()
            .map_err(|e| format!("cannot start systemd-nspawn: {e}"))?;
        let nspawn_pid = nspawn.id();
        let mut container = Self {
            nspawn: Some(nspawn),
            init_pid: 0,
        };
        container.init_pid = wait_for(Duration::from_secs(30), "the container's init", || {
            Ok(children_of(nspawn_pid).into_iter().next())
        })?;
        // Start-up is done once the state is "running", or "degraded" if some unrelated unit
        // failed, which is no concern of this test. Before systemd answers on its bus the
        // state reads "offline", and `--wait` does not wait for that.
        let state = wait_for(Duration::from_secs(120), "the container's boot", || {
            let state = container.run("systemctl is-system-running || true")?;
            let state = state.trim().to_owned();
            Ok(["running", "degraded"]
                .contains(&state.as_str())
                .then_some(state))
        })?;
        eprintln!("xtask e2e: container's systemd is {state}");
        Ok(container)
    }

    /// Runs a shell command inside (all namespaces of the container's init), with a clean
    /// environment; returns its stdout, or an error with its output.
    fn run(&self, script: &str) -> Result<String, String> {
        self.run_with_timeout(script, 180)
    }

    fn run_with_timeout(&self, script: &str, seconds: u32) -> Result<String, String> {
        output(
            Command::new("timeout")
                .args(["--kill-after=5", &seconds.to_string(), "nsenter", "-t"])
                .arg(self.init_pid.to_string())
                .args([
                    "-a",
                    "/usr/bin/env",
                    "-i",
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG=C.UTF-8",
                    "DEBIAN_FRONTEND=noninteractive",
                    "SYSTEMD_PAGER=",
                    "SYSTEMD_COLORS=0",
                    "/bin/sh",
                    "-c",
                    script,
                ]),
        )
    }

    /// A unit's ActiveState and its STATUS= text.
    fn unit_state(&self, unit: &str) -> Result<(String, String), String> {
        let shown = self.run(&format!(
            "systemctl show -p ActiveState --value {unit}; systemctl show -p StatusText --value {unit}"
        ))?;
        let mut lines = shown.lines();
        let state = lines.next().unwrap_or_default().trim().to_owned();
        let status = lines.next().unwrap_or_default().trim().to_owned();
        Ok((state, status))
    }

    /// The active nodes whose status says writer.
    fn writers(&self) -> Result<Vec<u32>, String> {
        let mut writers = Vec::new();
        for id in NODES {
            let (state, status) = self.unit_state(&node_unit(id))?;
            if state == "active" && role_of(&status) == Some("writer") {
                writers.push(id);
            }
        }
        Ok(writers)
    }

    /// The one node whose status says writer; an error if none or several do.
    fn writer(&self) -> Result<u32, String> {
        match self.writers()?.as_slice() {
            [one] => Ok(*one),
            other => Err(format!("expected one writer, found {other:?}")),
        }
    }

    /// Every node active with a role, and exactly one writer.
    fn settled(&self) -> Result<bool, String> {
        for id in NODES {
            let (state, status) = self.unit_state(&node_unit(id))?;
            if state != "active" || role_of(&status).is_none() {
                return Ok(false);
            }
        }
        Ok(self.writer().is_ok())
    }

    /// Polls `check` until it gives a value, for at most [`SETTLE`].
    fn poll<T>(
        &self,
        what: &str,
        check: impl FnMut() -> Result<Option<T>, String>,
    ) -> Result<T, String> {
        wait_for(SETTLE, what, check)
    }

    /// Shuts the container down (SIGTERM to nspawn asks its systemd to power off), killing it
    /// if that takes too long.
    fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &nspawn.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("xtask e2e: the container did not power off in 30 s; killing it");
        let _ = nspawn.kill();
        let _ = nspawn.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Polls `check` every 250 ms until it gives a value or `limit` passes.
fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The pids of a process's children (from /proc/<pid>/task/*/children).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_is_read_from_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\n\
                      Suites: bookworm-security\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let one_line = "# comment\ndeb http://sec.example/ bookworm-security main\n\
                        deb [arch=amd64] http://one.example/debian bookworm main\n";
        assert_eq!(
            mirror_in(one_line).as_deref(),
            Some("http://one.example/debian")
        );
        assert_eq!(
            mirror_in("deb https://other.example/apt cloud-sdk main\n"),
            None
        );
    }

    #[test]
    fn exposure_and_roles_are_read_from_systemd_output() {
        let report = "✗ UMask= ...\n→ Overall exposure level for chat-node@1.service: 1.1 OK 🙂\n";
        assert_eq!(exposure(report), Some(1.1));
        assert_eq!(role_of("leader 3; roles writer; term 4"), Some("writer"));
        assert_eq!(
            role_of("neighbours 2 on/0 off; roles input,forwarder"),
            Some("input")
        );
        assert_eq!(role_of("waiting for the bootstrap; not ready"), None);
    }
}
