//! Issue 12: the browser pages in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver by fantoccini) against a real cluster of 5
//! `chat-node` processes with a bootstrap and a nameserver, opened at the nameserver's address.
//!
//! Two users register and log in in two browser sessions that land on different input nodes,
//! find each other, chat privately and see each other's messages appear without a reload; one
//! creates a group and adds the other, both chat in it; a third user is refused the group. Then
//! the writer is SIGKILLed in the middle of the group chat: both pages keep sending (the page
//! retries with the message id it chose) and receiving, and in the end each shows every message
//! exactly once, live and after a reload.
//!
//! The topology keeps both browsers' input nodes serving through the failover: nodes 1, 2 and 3
//! form a triangle, node 4 hangs off 2 and node 5 off 3. Node 1 (the smallest id, all epochs
//! equal) is the first writer with 2 and 3 as replicas; 4 and 5 are the leaves, so the input
//! nodes. Without 1, the tree is rooted at 2 or 3 and 4 and 5 are still leaves: a leaf of degree
//! one never becomes the root while its neighbour, which holds every entry it holds and has a
//! smaller id, is alive.
//!
//! Screenshots of the main pages are written to `<target dir>/e2e/*.png` (`target/e2e/` by
//! default, `$CARGO_TARGET_DIR/e2e/` when that is set; `CHAT_E2E_SCREENSHOTS=DIR` overrides).
//! `cargo xtask test` installs Chromium when it is missing; without it this test fails saying
//! so (`CHAT_E2E_CHROMEDRIVER` and `CHAT_E2E_CHROMIUM` name other binaries).
//!
//! Port plan: base 21700 (nodes on 21701..=24705 in blocks of 1000, services on
//! 25700..=25702), chromedriver on 21799; used by no other test.

mod support;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chat_cluster::{
    ClusterOptions, LocalCluster, NodeOutput, NodeSignal, ServiceKind, ServiceOptions, Topology,
};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use support::{node_binary, service_binaries};

const BASE_PORT: u16 = 21_700;
const DRIVER_PORT: u16 = 21_799;
/// Upper bound for every condition polled below; reached only when something is broken.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// The ids of the input nodes the topology makes (see the module comment).
const INPUTS: [u64; 2] = [4, 5];
const PASSWORD: &str = "correct horse battery";

/// Polls `probe` until it answers `Ok`, at most [`DEADLINE`]; fails with `what` and the last
/// answer.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {DEADLINE:?}; last: {last}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A program: from the environment variable, else the Debian package's path.
fn program(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: install Debian's chromium and chromium-driver (`cargo xtask test` does), \
         or name them in CHAT_E2E_CHROMIUM and CHAT_E2E_CHROMEDRIVER",
        path.display()
    );
    path
}

/// Where screenshots go: `<target dir>/e2e`.
fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHAT_E2E_SCREENSHOTS") {
        return PathBuf::from(dir);
    }
    // The test runs as <target>/<profile>/deps/browser-<hash>.
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .nth(3)
        .expect("<target>/<profile>/deps/<exe>")
        .join("e2e")
}

/// chromedriver, answering on [`DRIVER_PORT`]; killed when dropped.
async fn start_chromedriver() -> tokio::process::Child {
    let driver = program("CHAT_E2E_CHROMEDRIVER", "/usr/bin/chromedriver");
    let child = tokio::process::Command::new(driver)
        .arg(format!("--port={DRIVER_PORT}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let client = reqwest::Client::new();
    eventually("chromedriver answers", || {
        let client = client.clone();
        async move {
            let status: Value = client
                .get(format!("http://127.0.0.1:{DRIVER_PORT}/status"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            if status["value"]["ready"] == json!(true) {
                Ok(())
            } else {
                Err(status.to_string())
            }
        }
    })
    .await;
    child
}

/// One browser: a WebDriver session of its own (its own cookie jar), and what it logged in as.
struct Browser {
    client: Client,
    name: &'static str,
    /// The input node it landed on, `http://127.0.0.1:PORT/`.
    origin: String,
}

async fn open_browser(name: &'static str) -> Browser {
    let chromium = program("CHAT_E2E_CHROMIUM", "/usr/bin/chromium");
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            // --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1000,760", "--lang=en-GB"],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("an object")
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
        .await
        .expect("a WebDriver session");
    Browser {
        client,
        name,
        origin: String::new(),
    }
}

impl Browser {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.origin, path.trim_start_matches('/'))
    }

    async fn goto(&self, path: &str) {
        self.client.goto(&self.url(path)).await.expect("navigates");
    }

    async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current url")
            .path()
            .to_owned()
    }

    /// Waits until the page's path satisfies `wanted`; returns it.
    async fn wait_path(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        eventually(&format!("{}: {what}", self.name), || async {
            let path = self.path().await;
            if wanted(&path) {
                Ok(path)
            } else {
                Err(format!("at {path}"))
            }
        })
        .await
    }

    async fn fill(&self, selector: &str, text: &str) {
        let field = self
            .client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("{}: no {selector}: {e}", self.name));
        field.clear().await.expect("clears");
        field.send_keys(text).await.expect("types");
    }

    async fn click(&self, locator: Locator<'_>) {
        let element = self
            .client
            .wait()
            .at_most(DEADLINE)
            .for_element(locator)
            .await
            .unwrap_or_else(|e| panic!("{}: nothing to click at {locator:?}: {e}", self.name));
        element.click().await.expect("clicks");
    }

    async fn text(&self, selector: &str) -> String {
        match self.client.find(Locator::Css(selector)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn script(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{}: script failed: {e}", self.name))
    }

    async fn screenshot(&self, file: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{file}.png")), png).expect("screenshot written");
    }

    /// Opens `path` at the nameserver and follows its redirect; returns the input node's
    /// origin.
    async fn through_nameserver(&mut self, front: &str, path: &str) -> String {
        self.client
            .goto(&format!("{front}{}", path.trim_start_matches('/')))
            .await
            .expect("the nameserver redirects");
        let url = self.client.current_url().await.expect("url");
        self.origin = format!("{}/", url.origin().ascii_serialization());
        self.origin.clone()
    }

    async fn register_and_log_in(&self, username: &str, tag: &str) {
        self.goto("/register").await;
        self.fill("#username", username).await;
        self.fill("#tag", tag).await;
        self.fill("#password", PASSWORD).await;
        if self.name == "alice" {
            self.screenshot("register").await;
        }
        self.click(Locator::Css("main form button[type=submit]"))
            .await;
        self.wait_path("registered, at the login page", |p| p == "/login")
            .await;
        self.fill("#username", username).await;
        self.fill("#tag", tag).await;
        self.fill("#password", PASSWORD).await;
        self.click(Locator::Css("main form button[type=submit]"))
            .await;
        self.wait_path("logged in, at home", |p| p == "/").await;
        let who = self.text(".account .who").await;
        assert_eq!(
            who,
            format!("{username}#{tag}"),
            "{}: the bar says who",
            self.name
        );
    }

    /// Searches `name` until `username#tag` is listed (another input node's replica may not
    /// have the new account yet) and opens the profile.
    async fn find_and_open_profile(&self, name: &str, tag: &str) {
        let link = format!("{name}#{tag}");
        eventually(&format!("{} finds {link}", self.name), || async {
            self.goto("/users").await;
            self.fill("#name", name).await;
            self.click(Locator::Css("form[role=search] button")).await;
            self.wait_path("search results", |p| p == "/users").await;
            match self.client.find(Locator::LinkText(&link)).await {
                Ok(_) => Ok(()),
                Err(_) => Err(self.text("main").await),
            }
        })
        .await;
        if self.name == "alice" {
            self.screenshot("search").await;
        }
        self.click(Locator::LinkText(&link)).await;
        self.wait_path("the profile", |p| p == format!("/users/{name}/{tag}"))
            .await;
    }

    /// Marks the page; [`Browser::not_reloaded`] tells whether it is still the same page.
    async fn mark(&self) {
        self.script("window.e2eMark = 'still here'; return null;")
            .await;
    }

    async fn not_reloaded(&self) -> bool {
        self.script("return window.e2eMark === 'still here';").await == json!(true)
    }

    /// The messages the page shows: (id, text), top to bottom.
    async fn shown(&self) -> Vec<(String, String)> {
        let rows = self
            .script(
                "return Array.from(document.querySelectorAll('#messages li.message')).map(\
                 li => [li.getAttribute('data-id'), li.querySelector('.content').textContent]);",
            )
            .await;
        serde_json::from_value(rows).expect("pairs of strings")
    }

    /// Types `text` and sends it with the Enter key, as a person does; waits until the page
    /// has it sent (the box is empty again), through any failover retries.
    async fn send(&self, text: &str) {
        self.fill("#content", text).await;
        let field = self
            .client
            .find(Locator::Css("#content"))
            .await
            .expect("message box");
        field.send_keys("\u{E007}").await.expect("Enter");
        eventually(&format!("{} sends {text:?}", self.name), || async {
            let left = self
                .script("return document.getElementById('content').value;")
                .await;
            let error = self.text("#send-error").await;
            if !error.is_empty() {
                panic!("{}: sending {text:?} failed: {error}", self.name);
            }
            if left == json!("") {
                Ok(())
            } else {
                Err(format!("box still holds {left}"))
            }
        })
        .await;
    }

    /// Waits until the page shows each of `texts` exactly once (and nothing else): no message
    /// lost, none twice.
    async fn shows_exactly(&self, texts: &[&str]) -> Vec<(String, String)> {
        eventually(
            &format!("{} shows {texts:?} once each", self.name),
            || async {
                let shown = self.shown().await;
                let mut shown_texts: Vec<&str> = shown.iter().map(|(_, t)| t.as_str()).collect();
                let mut ids: Vec<&str> = shown.iter().map(|(id, _)| id.as_str()).collect();
                shown_texts.sort_unstable();
                ids.sort_unstable();
                ids.dedup();
                let mut wanted = texts.to_vec();
                wanted.sort_unstable();
                if shown_texts == wanted && ids.len() == shown.len() {
                    Ok(shown)
                } else {
                    Err(format!("shows {shown:?}"))
                }
            },
        )
        .await
    }
}

/// The node ids whose `/status` says `role`.
fn with_role(statuses: &[Value], role: &str) -> Vec<u64> {
    statuses
        .iter()
        .filter(|s| {
            s["roles"]
                .as_array()
                .is_some_and(|roles| roles.iter().any(|r| r == role))
        })
        .filter_map(|s| s["id"].as_u64())
        .collect()
}

/// Waits until one writable writer leads and both input nodes are ready, reach it and are
/// listed at the nameserver; returns the writer.
async fn settled(cluster: &LocalCluster, front: &str, exclude: Option<u64>) -> u64 {
    let client = reqwest::Client::new();
    eventually("the cluster serves through the nameserver", || async {
        let statuses: Vec<Value> = cluster
            .status_all()
            .await
            .into_iter()
            .filter(|s| s.get("error").is_none() && s["id"].as_u64() != exclude)
            .collect();
        let writers = with_role(&statuses, "writer");
        let writable = statuses
            .iter()
            .any(|s| s["quorum"]["writable"] == json!(true));
        let inputs_ready = INPUTS.iter().all(|id| {
            statuses.iter().any(|s| {
                s["id"] == json!(id)
                    && s["ready"] == json!(true)
                    && s["writer_reachable"] == json!(true)
            })
        });
        let listed: Value = match client.get(format!("{front}_nameserver/nodes")).send().await {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(error) => return Err(error.to_string()),
        };
        let listed: Vec<u64> = listed["nodes"]
            .as_array()
            .map(|nodes| nodes.iter().filter_map(|n| n["node_id"].as_u64()).collect())
            .unwrap_or_default();
        match writers.as_slice() {
            [writer] if writable && inputs_ready && INPUTS.iter().all(|i| listed.contains(i)) => {
                Ok(*writer)
            }
            _ => Err(format!(
                "writers {writers:?}, writable {writable}, inputs ready {inputs_ready}, \
                 nameserver lists {listed:?}"
            )),
        }
    })
    .await
}

/// The workspace's `templates/`.
fn templates_dir() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
    let dir = dir.canonicalize().expect("templates/ beside the crates");
    dir.to_str().expect("a UTF-8 path").to_owned()
}

fn topology() -> Topology {
    Topology::Edges(vec![(1, 2), (1, 3), (2, 3), (2, 4), (3, 5)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_in_chromium_through_the_nameserver_across_a_writer_failover() {
    let started = Instant::now();
    let _driver = start_chromedriver().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let options = ClusterOptions {
        base_port: BASE_PORT,
        node_bin: Some(node_binary()),
        output: NodeOutput::Files,
        // bcrypt's default cost takes a quarter second a hash on this machine; the test is
        // about the pages.
        env: vec![
            ("CHAT_NODE_STORAGE__BCRYPT_COST".into(), "4".into()),
            // The pages of this tree, as a package serves them from its template directory
            // (and a change to them needs no rebuild of the node to be tested).
            ("CHAT_NODE_HTTP__TEMPLATE_DIR".into(), templates_dir()),
        ],
        services: Some(ServiceOptions {
            nameservers: 1,
            ..service_binaries()
        }),
        ..ClusterOptions::new(5, topology(), dir.path().join("run"))
    };
    let (mut cluster, mut alice, mut bob) = tokio::join!(
        async { LocalCluster::up(options).await.expect("cluster starts") },
        open_browser("alice"),
        open_browser("bob"),
    );
    let front = cluster
        .description()
        .services_of(ServiceKind::Nameserver)
        .find_map(chat_cluster::ServiceRecord::http_url)
        .expect("a nameserver front");
    assert_eq!(front, "http://127.0.0.1:25702/", "the documented port plan");
    let writer = settled(&cluster, &front, None).await;
    assert!(!INPUTS.contains(&writer), "the writer {writer} is no leaf");

    // Both open the nameserver's address and land on different input nodes.
    let alice_origin = alice.through_nameserver(&front, "/").await;
    // The nameserver picks input nodes in turn; a second look lands elsewhere.
    let deadline = Instant::now() + DEADLINE;
    let bob_origin = loop {
        let origin = bob.through_nameserver(&front, "/").await;
        if origin != alice_origin {
            break origin;
        }
        assert!(Instant::now() < deadline, "bob keeps landing on {origin}");
        tokio::time::sleep(POLL).await;
    };
    let node_ports: Vec<String> = INPUTS
        .iter()
        .map(|id| {
            let node = cluster.description().node(*id).expect("node");
            format!("http://127.0.0.1:{}/", node.http_port)
        })
        .collect();
    assert!(
        node_ports.contains(&alice_origin) && node_ports.contains(&bob_origin),
        "{alice_origin} and {bob_origin} are the input nodes {node_ports:?}"
    );
    alice.screenshot("welcome").await;

    tokio::join!(
        alice.register_and_log_in("alice", "1111"),
        bob.register_and_log_in("bob", "2222"),
    );
    alice.screenshot("login-home").await;

    // They find each other and open their private chat.
    tokio::join!(
        async {
            alice.find_and_open_profile("bob", "2222").await;
            alice.click(Locator::LinkText("Open chat")).await;
            alice
                .wait_path("the private chat", |p| p == "/users/bob/2222/chat")
                .await;
            alice.mark().await;
        },
        async {
            bob.find_and_open_profile("alice", "1111").await;
            bob.click(Locator::LinkText("Open chat")).await;
            bob.wait_path("the private chat", |p| p == "/users/alice/1111/chat")
                .await;
            bob.mark().await;
        },
    );
    alice.send("Hello Bob!").await;
    bob.shows_exactly(&["Hello Bob!"]).await;
    // Markup typed in a message is shown as text.
    let tricky = "Hi Alice <b>bold?</b> <script>alert(1)</script>";
    bob.send(tricky).await;
    alice.shows_exactly(&["Hello Bob!", tricky]).await;
    bob.shows_exactly(&["Hello Bob!", tricky]).await;
    for browser in [&alice, &bob] {
        assert!(
            browser.not_reloaded().await,
            "{}: messages arrived without a reload",
            browser.name
        );
        let markup = browser
            .script("return document.querySelectorAll('#messages b, #messages script').length;")
            .await;
        assert_eq!(
            markup,
            json!(0),
            "{}: no markup from messages",
            browser.name
        );
    }
    alice.screenshot("private-chat").await;

    // Alice creates a group and adds Bob.
    alice.click(Locator::LinkText("New group")).await;
    alice
        .wait_path("the new group form", |p| p == "/groups")
        .await;
    alice.fill("#groupname", "Climbing club").await;
    alice
        .click(Locator::Css("main form button[type=submit]"))
        .await;
    let group_path = alice
        .wait_path("the group page", |p| {
            p.starts_with("/groups/") && p.len() > "/groups/".len()
        })
        .await;
    let group_id = group_path.trim_start_matches("/groups/").to_owned();
    alice.screenshot("group").await;
    alice.goto(&format!("/groups/{group_id}/members")).await;
    alice.fill("#username", "bob").await;
    alice.fill("#tag", "2222").await;
    alice
        .click(Locator::Css("form[action$='/members'] button[type=submit]"))
        .await;
    eventually("bob is listed as a member", || async {
        match alice.client.find(Locator::LinkText("bob#2222")).await {
            Ok(_) => Ok(()),
            Err(_) => Err(alice.text("main").await),
        }
    })
    .await;
    alice.screenshot("members").await;
    alice.click(Locator::LinkText("Open chat")).await;
    let group_chat = format!("/groups/{group_id}/chat");
    alice.wait_path("the group chat", |p| p == group_chat).await;

    // Bob finds the group on his home page (once his input node's replica has it).
    eventually("bob's home lists the group", || async {
        bob.goto("/").await;
        match bob.client.find(Locator::LinkText("Climbing club")).await {
            Ok(_) => Ok(()),
            Err(_) => Err(bob.text("main").await),
        }
    })
    .await;
    bob.screenshot("home").await;
    bob.click(Locator::LinkText("Climbing club")).await;
    bob.wait_path("the group chat", |p| p == group_chat).await;
    alice.mark().await;
    bob.mark().await;
    alice.send("Welcome to the club, Bob").await;
    bob.send("Thanks! Saturday at the wall?").await;
    let mut said = vec!["Welcome to the club, Bob", "Thanks! Saturday at the wall?"];
    alice.shows_exactly(&said).await;
    bob.shows_exactly(&said).await;

    // A third person is refused the group.
    let mut carol = open_browser("carol").await;
    carol.through_nameserver(&front, "/").await;
    carol.register_and_log_in("carol", "3333").await;
    for path in [group_chat.clone(), format!("/groups/{group_id}")] {
        carol.goto(&path).await;
        let heading = carol.text("main h1").await;
        assert_eq!(heading, "Not allowed", "carol at {path}");
    }
    assert!(
        carol.client.find(Locator::Css("#content")).await.is_err(),
        "no message box for carol"
    );
    carol.screenshot("refused").await;
    carol.client.close().await.expect("carol's session ends");

    // The writer dies mid-chat; both keep typing.
    let killed_at = Instant::now();
    cluster.kill(writer, NodeSignal::Kill).expect("SIGKILL");
    let during = [
        "Did the server just blink?",
        "Something flickered",
        "Still here?",
        "Yes!",
    ];
    tokio::join!(
        async {
            alice.send(during[0]).await;
            alice.send(during[2]).await;
        },
        async {
            bob.send(during[1]).await;
            bob.send(during[3]).await;
        },
    );
    println!(
        "browser: four messages sent {:?} after the writer's SIGKILL",
        killed_at.elapsed()
    );
    said.extend(during);
    let alice_view = alice.shows_exactly(&said).await;
    let bob_view = bob.shows_exactly(&said).await;
    let new_writer = settled(&cluster, &front, Some(writer)).await;
    assert_ne!(new_writer, writer, "a new writer");
    for browser in [&alice, &bob] {
        assert!(
            browser.not_reloaded().await,
            "{}: the failover needed no reload",
            browser.name
        );
    }
    alice.screenshot("group-chat").await;
    assert_eq!(
        alice_view.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        bob_view.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "both pages show the messages in the same (epoch) order"
    );

    // What the server renders afterwards agrees: every message once, in the same order.
    for browser in [&alice, &bob] {
        browser.client.refresh().await.expect("reload");
        let reloaded = browser.shows_exactly(&said).await;
        assert_eq!(reloaded, alice_view, "{}: after a reload", browser.name);
    }

    // A message after the failover reaches the other page live.
    alice.mark().await;
    bob.mark().await;
    alice.send("Back to normal").await;
    said.push("Back to normal");
    bob.shows_exactly(&said).await;
    assert!(bob.not_reloaded().await);

    // The sealed cookie opens on the other input node too (same host: browsers share cookies
    // across ports), with read-your-writes.
    alice.origin.clone_from(&bob.origin);
    alice.goto(&group_chat).await;
    assert_eq!(alice.text(".account .who").await, "alice#1111");
    alice.shows_exactly(&said).await;

    // Her home page lists both chats.
    alice.goto("/").await;
    for chat in ["bob#2222", "Climbing club"] {
        assert!(
            alice.client.find(Locator::LinkText(chat)).await.is_ok(),
            "alice's home lists {chat}: {}",
            alice.text("main").await
        );
    }
    alice.screenshot("home-chats").await;
    // Showing the group chat just now moved her read position: nothing unread there.
    let badge_hidden = alice
        .script(&format!(
            "return document.querySelector('[data-chat-id=\"{group_id}\"] .unread').hidden;"
        ))
        .await;
    assert_eq!(badge_hidden, json!(true), "alice has read the group chat");

    // Logging out is a form post and ends the session.
    alice.click(Locator::Css(".account form button")).await;
    alice.wait_path("logged out", |p| p == "/login").await;
    alice.goto(&group_chat).await;
    alice
        .wait_path("sent to the login page", |p| p == "/login")
        .await;

    alice.client.close().await.expect("alice's session ends");
    bob.client.close().await.expect("bob's session ends");
    cluster.down().await.expect("stops");
    println!(
        "browser: whole test {:?}, screenshots in {}",
        started.elapsed(),
        screenshot_dir().display()
    );
}
