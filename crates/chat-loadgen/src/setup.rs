//! Setup: every client registers its own user and logs in (a bearer token), then the chats
//! are made (private chats pair clients; groups are created by their first member, who adds
//! the others) and seeded with a few messages so reads return a page.
//!
//! Setup waits out `429 rate_limited` and `503 unavailable` (their `Retry-After`) and
//! transport errors until the setup timeout; every POST carries an `Idempotency-Key` or a
//! message id, so those retries never write twice. The login limits of a node
//! (`[http] login_per_account`, `login_per_address`) allow 100 logins a minute from one
//! address by default: more clients than that only wait, unless the bench raises them.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use uuid::Uuid;

use crate::conn::{Call, Conn, Reply};
use crate::options::{ChatKind, Options};
use crate::LoadError;

/// Every user gets this tag; names are unique per run.
const TAG: &str = "0001";

/// Least per-request timeout in setup (the setup timeout caps it).
const SETUP_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One simulated user: its account, connection, chat and newest epoch seen.
pub(crate) struct Client {
    pub(crate) index: usize,
    pub(crate) conn: Conn,
    pub(crate) username: String,
    pub(crate) token: String,
    /// Largest `Chat-Epoch` answered to this client.
    pub(crate) epoch: u64,
    /// Index of the client's chat in [`Chats`].
    pub(crate) chat: usize,
    /// Where the client posts and reads: `/api/users/{partner}/{tag}/chat` or
    /// `/api/groups/{id}/chat`.
    pub(crate) chat_path: String,
    /// Message ids this client had acknowledged, when verifying.
    pub(crate) acknowledged: Vec<Uuid>,
}

impl Client {
    pub(crate) fn see(&mut self, reply: &Reply) {
        if let Some(epoch) = reply.epoch {
            self.epoch = self.epoch.max(epoch);
        }
    }
}

/// Which clients share which chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// For each chat, its clients; the first creates it (groups) and seeds it.
    pub(crate) members: Vec<Vec<usize>>,
    /// For each client, its chat.
    pub(crate) chat_of: Vec<usize>,
    /// For each client in a private chat, the partner it writes to.
    pub(crate) partner: Vec<Option<usize>>,
}

impl Layout {
    /// Private: pairs (0,1), (2,3), ...; an odd last client pairs with client 0, in a chat of
    /// its own (client 0 keeps writing to client 1). Groups: runs of `group_size`.
    pub(crate) fn new(kind: ChatKind, clients: usize, group_size: usize) -> Self {
        let mut members = Vec::new();
        let mut chat_of = vec![0; clients];
        let mut partner = vec![None; clients];
        match kind {
            ChatKind::Private => {
                for pair in (0..clients).collect::<Vec<_>>().chunks(2) {
                    let chat = members.len();
                    match *pair {
                        [a, b] => {
                            partner[a] = Some(b);
                            partner[b] = Some(a);
                            chat_of[a] = chat;
                            chat_of[b] = chat;
                            members.push(vec![a, b]);
                        }
                        [last] => {
                            partner[last] = Some(0);
                            chat_of[last] = chat;
                            members.push(vec![last, 0]);
                        }
                        _ => unreachable!("chunks of 2"),
                    }
                }
            }
            ChatKind::Group => {
                for group in (0..clients).collect::<Vec<_>>().chunks(group_size) {
                    for &client in group {
                        chat_of[client] = members.len();
                    }
                    members.push(group.to_vec());
                }
            }
        }
        Layout {
            members,
            chat_of,
            partner,
        }
    }
}

/// The chats of a run.
pub(crate) struct Chats {
    pub(crate) layout: Layout,
}

struct Setup {
    /// A copy: the steps run in spawned tasks.
    options: Options,
    prefix: String,
    deadline: Instant,
}

impl Setup {
    fn username(&self, index: usize) -> String {
        format!("{}{index}", self.prefix)
    }

    /// Sends what `call` builds until it is answered with one of `ok`; waits out 429, 503
    /// and transport errors until the setup deadline.
    async fn settle<'c>(
        &self,
        conn: &mut Conn,
        step: &str,
        ok: &[StatusCode],
        call: impl Fn() -> Call<'c>,
    ) -> Result<Reply, LoadError> {
        loop {
            let wait = match conn.send(call()).await {
                Ok(reply) if ok.contains(&reply.status) => return Ok(reply),
                Ok(reply)
                    if matches!(
                        reply.status,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                    ) =>
                {
                    reply.retry_after.unwrap_or(Duration::from_millis(250))
                }
                Ok(reply) => {
                    return Err(LoadError::Setup {
                        step: step.to_owned(),
                        detail: format!(
                            "{}: {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body)
                        ),
                    })
                }
                Err(_) => Duration::from_millis(250),
            };
            if Instant::now() + wait > self.deadline {
                return Err(LoadError::Setup {
                    step: step.to_owned(),
                    detail: format!(
                        "still refused or unreachable after the setup timeout ({:?}); for many \
                         clients raise [http] login_per_address and login_per_account",
                        self.options.setup_timeout
                    ),
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn account(&self, client: &mut Client) -> Result<(), LoadError> {
        let credentials = json!({
            "username": client.username,
            "tag": TAG,
            "password": self.options.password,
        });
        let key = format!("register-{}", client.username);
        let registered = self
            .settle(
                &mut client.conn,
                "register",
                // 409: the name is taken, by an earlier run with the same --name-prefix (whose
                // idempotency record the node no longer holds): log in to it.
                &[StatusCode::CREATED, StatusCode::OK, StatusCode::CONFLICT],
                || Call {
                    idempotency_key: Some(&key),
                    ..Call::post("/api/register", None, &credentials)
                },
            )
            .await?;
        client.see(&registered);
        let login = self
            .settle(&mut client.conn, "login", &[StatusCode::OK], || Call {
                epoch: Some(client.epoch),
                ..Call::post("/api/login", None, &credentials)
            })
            .await?;
        client.see(&login);
        client.token = login
            .json()
            .and_then(|v| v["token"].as_str().map(str::to_owned))
            .ok_or_else(|| LoadError::Setup {
                step: "login".into(),
                detail: "no token in the answer".into(),
            })?;
        Ok(())
    }

    /// The first member creates the group and adds the others; answers the group's id.
    async fn group(
        &self,
        owner: &mut Client,
        members: &[usize],
        chat: usize,
    ) -> Result<String, LoadError> {
        let key = format!("{}group-{chat}", self.prefix);
        let body = json!({ "name": format!("loadgen {chat}") });
        let token = owner.token.clone();
        let created = self
            .settle(
                &mut owner.conn,
                "create group",
                &[StatusCode::CREATED, StatusCode::OK],
                || Call {
                    idempotency_key: Some(&key),
                    ..Call::post("/api/groups", Some(&token), &body)
                },
            )
            .await?;
        owner.see(&created);
        let id = created
            .json()
            .and_then(|v| v["group"]["id"].as_str().map(str::to_owned))
            .ok_or_else(|| LoadError::Setup {
                step: "create group".into(),
                detail: "no group id in the answer".into(),
            })?;
        let path = format!("/api/groups/{id}/members");
        for &member in &members[1..] {
            let body = json!({ "username": self.username(member), "tag": TAG });
            let key = format!("{}member-{chat}-{member}", self.prefix);
            let added = self
                .settle(
                    &mut owner.conn,
                    "add member",
                    &[StatusCode::CREATED, StatusCode::OK],
                    || Call {
                        idempotency_key: Some(&key),
                        ..Call::post(&path, Some(&token), &body)
                    },
                )
                .await?;
            owner.see(&added);
        }
        Ok(id)
    }

    async fn seed(&self, client: &mut Client, verify: bool) -> Result<(), LoadError> {
        let path = client.chat_path.clone();
        let token = client.token.clone();
        for n in 0..self.options.seed_messages {
            let id = Uuid::now_v7();
            let body = json!({ "content": format!("seed {n}"), "id": id });
            let sent = self
                .settle(
                    &mut client.conn,
                    "seed message",
                    &[StatusCode::CREATED, StatusCode::OK],
                    || Call::post(&path, Some(&token), &body),
                )
                .await?;
            client.see(&sent);
            if verify {
                client.acknowledged.push(id);
            }
        }
        Ok(())
    }
}

/// Runs `step` on each of `chosen` clients, at most `limit` at once; gives the clients back.
async fn each<F, Fut>(
    clients: &mut [Option<Client>],
    chosen: &[usize],
    limit: usize,
    step: F,
) -> Result<(), LoadError>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = (Client, Result<(), LoadError>)> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit));
    let mut running = Vec::new();
    for &index in chosen {
        let client = clients[index].take().expect("each client once per step");
        let permits = Arc::clone(&permits);
        let work = step(client);
        running.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            work.await
        }));
    }
    let mut first_error = None;
    for task in running {
        let (client, result) = task.await.expect("setup tasks do not panic");
        let index = client.index;
        clients[index] = Some(client);
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Registers and logs in every client and makes and seeds the chats.
pub(crate) async fn run(options: &Options) -> Result<(Vec<Client>, Chats), LoadError> {
    let prefix = match &options.name_prefix {
        Some(prefix) => prefix.clone(),
        None => format!("lg{:06x}-", rand::random::<u32>() & 0xff_ffff),
    };
    let shared = Arc::new(Setup {
        options: options.clone(),
        prefix,
        deadline: Instant::now() + options.setup_timeout,
    });
    let layout = Layout::new(options.chat, options.clients, options.group_size);
    let targets: Vec<_> = options.targets.iter().cloned().map(Arc::new).collect();
    // Logins queue for the node's bcrypt permits (one hash per core, ~260 ms each at the
    // default cost): giving up on one after the run's request timeout would only start it
    // again behind the same queue.
    let setup_request_timeout = options
        .request_timeout
        .max(SETUP_REQUEST_TIMEOUT)
        .min(options.setup_timeout);
    let mut clients: Vec<Option<Client>> = (0..options.clients)
        .map(|index| {
            let target = Arc::clone(&targets[index % targets.len()]);
            Some(Client {
                index,
                conn: Conn::new(target, setup_request_timeout),
                username: shared.username(index),
                token: String::new(),
                epoch: 0,
                chat: layout.chat_of[index],
                chat_path: String::new(),
                acknowledged: Vec::new(),
            })
        })
        .collect();
    let everyone: Vec<usize> = (0..options.clients).collect();
    let limit = options.setup_concurrency;

    let s = Arc::clone(&shared);
    each(&mut clients, &everyone, limit, move |mut client| {
        let s = Arc::clone(&s);
        async move {
            let result = s.account(&mut client).await;
            (client, result)
        }
    })
    .await?;

    match options.chat {
        ChatKind::Private => {
            for (index, slot) in clients.iter_mut().enumerate() {
                let client = slot.as_mut().expect("all back");
                let partner = layout.partner[index].expect("every private client has one");
                client.chat_path = format!("/api/users/{}/{TAG}/chat", shared.username(partner));
            }
        }
        ChatKind::Group => {
            let owners: Vec<usize> = layout.members.iter().map(|m| m[0]).collect();
            let (ids_tx, mut ids_rx) = tokio::sync::mpsc::unbounded_channel();
            let s = Arc::clone(&shared);
            let members = layout.members.clone();
            each(&mut clients, &owners, limit, move |mut owner| {
                let s = Arc::clone(&s);
                let chat = owner.chat;
                let members = members[chat].clone();
                let ids_tx = ids_tx.clone();
                async move {
                    let result = s.group(&mut owner, &members, chat).await;
                    let result = result.map(|id| {
                        let _ = ids_tx.send((chat, id));
                    });
                    (owner, result)
                }
            })
            .await?;
            let mut ids = vec![String::new(); layout.members.len()];
            while let Ok((chat, id)) = ids_rx.try_recv() {
                ids[chat] = id;
            }
            for slot in &mut clients {
                let client = slot.as_mut().expect("all back");
                client.chat_path = format!("/api/groups/{}/chat", ids[client.chat]);
            }
        }
    }

    if options.seed_messages > 0 {
        // The first member of a chat is in no other chat first, and its chat path leads there.
        let seeders: Vec<usize> = layout.members.iter().map(|m| m[0]).collect();
        let s = Arc::clone(&shared);
        let verify = options.verify;
        each(&mut clients, &seeders, limit, move |mut client| {
            let s = Arc::clone(&s);
            async move {
                let result = s.seed(&mut client, verify).await;
                (client, result)
            }
        })
        .await?;
    }

    let clients = clients.into_iter().map(|c| c.expect("all back")).collect();
    Ok((clients, Chats { layout }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_chats_pair_clients_and_an_odd_one_joins_the_first() {
        let layout = Layout::new(ChatKind::Private, 5, 10);
        assert_eq!(layout.members, vec![vec![0, 1], vec![2, 3], vec![4, 0]]);
        assert_eq!(layout.chat_of, vec![0, 0, 1, 1, 2]);
        assert_eq!(
            layout.partner,
            vec![Some(1), Some(0), Some(3), Some(2), Some(0)]
        );
    }

    #[test]
    fn groups_are_runs_of_the_group_size() {
        let layout = Layout::new(ChatKind::Group, 7, 3);
        assert_eq!(layout.members, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
        assert_eq!(layout.chat_of, vec![0, 0, 0, 1, 1, 1, 2]);
    }
}
