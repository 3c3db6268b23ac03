//! The thread that owns the ZeroMQ sockets.
//!
//! ZeroMQ sockets must not be shared between threads, so one thread owns both ROUTERs and
//! the monitor and does every socket call. It sleeps in `zmq::poll` on all of them at once
//! plus the read end of a Unix socket pair that handles write to when they queue work, so
//! a send wakes it at once instead of waiting for a poll timeout.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

use crate::identity::{node_identity, parse_node_identity};
use crate::monitor::{parse_monitor_event, ClosedLink, ConnectPlan, LinkChange, LinkTracker};
use crate::secure::{kind, Refusal, SecureLinks, DATA_OVERHEAD};
use crate::stats::{add, bump, Counters};
use crate::TransportEvent;

/// How long the thread waits before retrying to hand events to a full consumer queue.
/// Only used while the consumer is behind; an idle transport sleeps until woken.
const CONSUMER_RETRY_MS: i64 = 5;

/// Inbound messages read per wake-up before the thread looks at its other sockets again,
/// so a flood from one side cannot starve sends or link events.
const RECEIVE_BATCH: usize = 256;

/// An outgoing message on its way to the socket thread.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) peer: u64,
    pub(crate) payload: Vec<u8>,
}

/// Requests other than sends; rare, so they travel on an unbounded queue and are never
/// dropped.
#[derive(Debug)]
pub(crate) enum Command {
    Connect { peer: u64, endpoint: String },
    Disconnect { peer: u64 },
}

/// Wakes the socket thread. Shared by all handles and the thread.
#[derive(Debug)]
pub(crate) struct Wakeup {
    /// Write end of the wake pipe; non-blocking, so waking never blocks a caller.
    writer: UnixStream,
    /// True while a wake byte is in flight, so a burst of sends writes one byte, not one each.
    pending: AtomicBool,
    /// Set once to make the thread close its sockets and exit.
    stop: AtomicBool,
}

impl Wakeup {
    /// Creates the wake signal and the read end the socket thread polls.
    pub(crate) fn new() -> std::io::Result<(Arc<Wakeup>, UnixStream)> {
        let (writer, reader) = UnixStream::pair()?;
        writer.set_nonblocking(true)?;
        reader.set_nonblocking(true)?;
        let wakeup = Wakeup {
            writer,
            pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        };
        Ok((Arc::new(wakeup), reader))
    }

    /// Makes the thread's next (or current) poll return. Call after queueing work.
    pub(crate) fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            // A full pipe (WouldBlock) means wake bytes are already waiting: nothing lost.
            let _ = (&self.writer).write(&[1]);
        }
    }

    /// Asks the thread to stop and wakes it.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.pending.store(false, Ordering::Release);
        self.wake();
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Everything the socket thread owns.
pub(crate) struct Worker {
    /// Bound to our port; peers' outbound sockets connect here.
    pub(crate) inbound: zmq::Socket,
    /// Connects to peers' inbound sockets; the preferred path for our sends.
    pub(crate) outbound: zmq::Socket,
    /// Receives the outbound socket's monitor events.
    pub(crate) monitor: zmq::Socket,
    pub(crate) wake_reader: UnixStream,
    pub(crate) wakeup: Arc<Wakeup>,
    pub(crate) sends: Receiver<Outgoing>,
    pub(crate) commands: Receiver<Command>,
    pub(crate) events: mpsc::Sender<TransportEvent>,
    pub(crate) counters: Arc<Counters>,
    /// Dropped when the thread ends, which tells `shutdown().await` the sockets are closed.
    pub(crate) exited: watch::Sender<()>,
    pub(crate) node_id: u64,
    /// Payloads larger than this are neither sent nor delivered.
    pub(crate) max_message_bytes: usize,
    /// The sealed wire's state, when it is on; moved into the loop's state at start.
    pub(crate) secure: Option<SecureLinks>,
}

/// Per-run state of the socket thread.
struct Loop {
    links: LinkTracker,
    /// Events waiting for room in the consumer's queue, in order. Inbound messages are only
    /// read from the sockets while this is empty, so it holds at most one message plus link
    /// events; back-pressure stays in ZeroMQ's pipes instead of growing here.
    outbox: VecDeque<TransportEvent>,
    /// The consumer dropped its receiver: events are discarded from then on.
    consumer_gone: bool,
    /// Sessions of the sealed wire, when it is on.
    secure: Option<SecureLinks>,
}

impl Loop {
    fn waiting_for_consumer(&self) -> bool {
        !self.outbox.is_empty() && !self.consumer_gone
    }
}

/// Which sockets the last poll found readable.
struct Readiness {
    inbound: bool,
    outbound: bool,
    monitor: bool,
}

impl Worker {
    /// Runs until a stop is requested or every handle is gone, then closes the sockets.
    pub(crate) fn run(mut self) {
        let mut state = Loop {
            links: LinkTracker::default(),
            outbox: VecDeque::new(),
            consumer_gone: false,
            secure: self.secure.take(),
        };
        loop {
            let ready = match self.poll(&state) {
                Ok(ready) => ready,
                Err(zmq::Error::EINTR) => continue,
                Err(error) => {
                    tracing::error!(subsystem = "transport", node = self.node_id, %error,
                        "poll failed; closing the transport");
                    break;
                }
            };
            self.drain_wake_pipe();
            if self.wakeup.stop_requested() {
                break;
            }
            let handles_gone = self.apply_commands(&mut state);
            self.send_queued(&mut state);
            self.retry_handshakes(&mut state);
            if ready.monitor {
                self.read_monitor(&mut state);
            }
            if ready.inbound {
                self.read_messages(&self.inbound, &mut state);
            }
            if ready.outbound {
                self.read_messages(&self.outbound, &mut state);
            }
            self.flush_outbox(&mut state);
            if handles_gone {
                break;
            }
        }
        // Best effort for what was queued before the stop; the linger bounds how long the
        // context waits for it below.
        self.send_queued(&mut state);
        let Worker {
            inbound,
            outbound,
            monitor,
            exited,
            ..
        } = self;
        // Closing the outbound socket stops its monitor; the context is terminated when the
        // last socket holding it is dropped, after the linger.
        drop(outbound);
        drop(inbound);
        drop(monitor);
        drop(exited);
    }

    /// Sleeps until a socket or the wake pipe is ready.
    fn poll(&self, state: &Loop) -> Result<Readiness, zmq::Error> {
        let waiting = state.waiting_for_consumer();
        let message_interest = if waiting {
            zmq::PollEvents::empty()
        } else {
            zmq::POLLIN
        };
        let mut items = [
            self.inbound.as_poll_item(message_interest),
            self.outbound.as_poll_item(message_interest),
            self.monitor.as_poll_item(zmq::POLLIN),
            zmq::PollItem::from_fd(self.wake_reader.as_raw_fd(), zmq::POLLIN),
        ];
        let mut timeout = if waiting { CONSUMER_RETRY_MS } else { -1 };
        if let Some(retry) = state.secure.as_ref().and_then(SecureLinks::next_retry) {
            let until_retry = retry.saturating_duration_since(Instant::now()).as_millis();
            // Round up: waking a millisecond early would find nothing due and spin.
            let until_retry = i64::try_from(until_retry)
                .unwrap_or(i64::MAX)
                .saturating_add(1);
            timeout = if timeout < 0 {
                until_retry
            } else {
                timeout.min(until_retry)
            };
        }
        zmq::poll(&mut items, timeout)?;
        Ok(Readiness {
            inbound: items[0].is_readable(),
            outbound: items[1].is_readable(),
            monitor: items[2].is_readable(),
        })
    }

    fn drain_wake_pipe(&self) {
        let mut buffer = [0u8; 64];
        while let Ok(read) = (&self.wake_reader).read(&mut buffer) {
            if read == 0 {
                break;
            }
        }
        // Clear the flag after emptying the pipe and before draining the queues: a send
        // queued after this point finds it clear and writes a new byte, which stays in the
        // pipe for the next poll. Cleared before the pipe was emptied, the byte of a send
        // racing with the drain could be read here while the flag stayed set; every later
        // send would then skip its byte and the thread sleep with work queued (seen as a
        // throughput bench that stalled after ~170 messages). Acquire pairs with the
        // senders' release, so what they queued before setting the flag is seen.
        self.wakeup.pending.swap(false, Ordering::AcqRel);
    }

    /// Applies connect/disconnect requests; returns true once every handle is gone.
    fn apply_commands(&self, state: &mut Loop) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Connect { peer, endpoint }) => self.connect(state, peer, endpoint),
                Ok(Command::Disconnect { peer }) => {
                    if let Some(closed) = state.links.disconnect(peer) {
                        self.close_link(state, peer, closed);
                    }
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    fn connect(&self, state: &mut Loop, peer: u64, endpoint: String) {
        match state.links.connect(peer, &endpoint) {
            ConnectPlan::AlreadyConnected => {}
            ConnectPlan::Connect { replaced } => {
                if let Some(closed) = replaced {
                    self.close_link(state, peer, closed);
                }
                match self.outbound.connect(&endpoint) {
                    Ok(()) => tracing::debug!(subsystem = "transport", node = self.node_id,
                        peer, %endpoint, "connecting"),
                    Err(error) => {
                        // Validated before queueing, so this is a ZeroMQ resource problem.
                        let _ = state.links.disconnect(peer);
                        tracing::warn!(subsystem = "transport", node = self.node_id, peer,
                            %endpoint, %error, "connect failed");
                    }
                }
            }
        }
    }

    fn close_link(&self, state: &mut Loop, peer: u64, closed: ClosedLink) {
        if let Err(error) = self.outbound.disconnect(&closed.endpoint) {
            tracing::debug!(subsystem = "transport", node = self.node_id, peer,
                endpoint = %closed.endpoint, %error, "disconnect failed");
        }
        if closed.was_up {
            self.report(state, LinkChange::Down(peer));
        }
    }

    /// Queues a link change for the consumer. A link that went down may lead to a restarted
    /// peer, which has forgotten our sealed session: the next send shakes hands again.
    fn report(&self, state: &mut Loop, change: LinkChange) {
        if let (LinkChange::Down(peer), Some(secure)) = (change, state.secure.as_mut()) {
            add(&self.counters.dropped_unroutable, secure.reset_sender(peer));
        }
        let (event, counter, what) = match change {
            LinkChange::Up(peer) => (
                TransportEvent::LinkUp { peer },
                &self.counters.link_ups,
                "link up",
            ),
            LinkChange::Down(peer) => (
                TransportEvent::LinkDown { peer },
                &self.counters.link_downs,
                "link down",
            ),
        };
        bump(counter);
        tracing::debug!(
            subsystem = "transport",
            node = self.node_id,
            ?event,
            "{what}"
        );
        state.outbox.push_back(event);
    }

    /// Repeats due HELLOs of the sealed wire and gives up the hopeless ones.
    fn retry_handshakes(&self, state: &mut Loop) {
        let Some(secure) = state.secure.as_mut() else {
            return;
        };
        let (hellos, dropped) = secure.retry_handshakes(Instant::now());
        add(&self.counters.dropped_handshake_pending, dropped);
        for (peer, hello) in hellos {
            self.send_sealed_frames(state, peer, vec![hello]);
        }
    }

    fn send_queued(&self, state: &mut Loop) {
        while let Ok(outgoing) = self.sends.try_recv() {
            self.send_one(state, outgoing);
        }
    }

    /// Sends one payload: as it is, or sealed (which may first take a handshake).
    fn send_one(&self, state: &mut Loop, Outgoing { peer, payload }: Outgoing) {
        if payload.len() > self.max_message_bytes {
            bump(&self.counters.dropped_oversized);
            return;
        }
        let Some(secure) = state.secure.as_mut() else {
            let result = self.send_frame(peer, &payload[..]);
            self.count_message_send(peer, result, 1);
            return;
        };
        if let Some(sealer) = secure.sealer(peer) {
            // The steady state: seal into the message the socket sends, nothing else.
            let mut frame = zmq::Message::with_size(payload.len() + DATA_OVERHEAD);
            sealer.seal_into(&payload, &mut frame);
            let result = self.send_frame(peer, frame);
            self.count_message_send(peer, result, 1);
            return;
        }
        let output = secure.send(peer, payload, Instant::now());
        add(
            &self.counters.dropped_handshake_pending,
            output.dropped_pending,
        );
        self.send_sealed_frames(state, peer, output.frames);
    }

    /// Sends sealed-wire frames to `peer`. DATA frames are messages and counted as such; a
    /// HELLO that cannot go out ends the handshake, and the payloads waiting for it are
    /// counted as the HELLO failed.
    fn send_sealed_frames(&self, state: &mut Loop, peer: u64, frames: Vec<Vec<u8>>) {
        for frame in frames {
            let kind = frame.first().copied();
            let result = self.send_frame(peer, frame);
            match kind {
                Some(kind::DATA) => self.count_message_send(peer, result, 1),
                Some(kind::HELLO) if result.is_err() => {
                    let waiting = state
                        .secure
                        .as_mut()
                        .map_or(0, |secure| secure.reset_sender(peer));
                    self.count_message_send(peer, result, waiting);
                }
                _ => {
                    if let Err(error) = result {
                        tracing::debug!(subsystem = "transport", node = self.node_id, peer,
                            %error, "handshake frame not sent");
                    }
                }
            }
        }
    }

    /// Sends `[identity, frame]` without waiting, over our own connection to the peer if it
    /// is up, else over the one the peer opened to us (so a node can answer a peer it never
    /// connected to, as data-plane parents answer children). The identity part is where a
    /// ROUTER with `ZMQ_ROUTER_MANDATORY` reports an unknown peer or a full pipe, before any
    /// part is queued, so it alone picks the socket and the frame is handed over once.
    fn send_frame(&self, peer: u64, frame: impl Into<zmq::Message>) -> Result<(), zmq::Error> {
        let identity = node_identity(peer);
        let more = zmq::SNDMORE | zmq::DONTWAIT;
        let socket = match self.outbound.send(identity.as_bytes(), more) {
            Ok(()) => &self.outbound,
            Err(zmq::Error::EHOSTUNREACH) => {
                self.inbound.send(identity.as_bytes(), more)?;
                &self.inbound
            }
            Err(error) => return Err(error),
        };
        socket.send(frame.into(), zmq::DONTWAIT)
    }

    /// Counts the outcome of sending `messages` messages to `peer`.
    fn count_message_send(&self, peer: u64, result: Result<(), zmq::Error>, messages: u64) {
        match result {
            Ok(()) => add(&self.counters.sent, messages),
            // ROUTER_MANDATORY turns "no such peer" into this error instead of a silent drop.
            Err(zmq::Error::EHOSTUNREACH) => add(&self.counters.dropped_unroutable, messages),
            Err(zmq::Error::EAGAIN) => add(&self.counters.dropped_pipe_full, messages),
            Err(error) => {
                add(&self.counters.send_errors, messages);
                tracing::warn!(subsystem = "transport", node = self.node_id, peer, %error,
                    "send failed");
            }
        }
    }

    fn read_monitor(&self, state: &mut Loop) {
        while let Ok(frames) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            let Some(event) = parse_monitor_event(&frames) else {
                tracing::debug!(
                    subsystem = "transport",
                    node = self.node_id,
                    "unreadable monitor event"
                );
                continue;
            };
            tracing::trace!(subsystem = "transport", node = self.node_id,
                event = event.event, endpoint = %event.endpoint, "monitor event");
            if let Some(change) = state.links.on_event(&event) {
                self.report(state, change);
            }
        }
    }

    fn read_messages(&self, socket: &zmq::Socket, state: &mut Loop) {
        // One reading of the clock per batch: only a HELLO uses it, to age handshakes.
        let now = Instant::now();
        for _ in 0..RECEIVE_BATCH {
            if state.waiting_for_consumer() {
                return;
            }
            match self.receive_one(socket) {
                Ok(Some((from, frame))) => {
                    let Some(payload) = self.open(state, from, frame, now) else {
                        continue;
                    };
                    if payload.len() > self.max_message_bytes {
                        bump(&self.counters.refused_oversized);
                        continue;
                    }
                    bump(&self.counters.received);
                    state
                        .outbox
                        .push_back(TransportEvent::Received { from, payload });
                    self.flush_outbox(state);
                }
                Ok(None) => bump(&self.counters.bad_frames),
                Err(zmq::Error::EAGAIN) => return,
                Err(error) => {
                    tracing::warn!(subsystem = "transport", node = self.node_id, %error,
                        "receive failed");
                    return;
                }
            }
        }
    }

    /// The payload of a frame received from `from`: the frame itself on a clear wire; on a
    /// sealed one, the opened payload of a DATA frame, after answering handshake frames and
    /// counting refusals.
    fn open(
        &self,
        state: &mut Loop,
        from: u64,
        frame: zmq::Message,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let Some(secure) = state.secure.as_mut() else {
            return Some(frame.to_vec());
        };
        let output = secure.receive(from, &frame[..], now);
        if output.session_opened {
            bump(&self.counters.sessions_opened);
        }
        if let Some(refusal) = output.refused {
            let counter = match refusal {
                Refusal::Unauthenticated => &self.counters.refused_unauthenticated,
                Refusal::Tampered => &self.counters.refused_tampered,
                Refusal::Replayed => &self.counters.refused_replayed,
            };
            bump(counter);
            tracing::debug!(
                subsystem = "transport",
                node = self.node_id,
                peer = from,
                ?refusal,
                "refused a frame"
            );
        }
        self.send_sealed_frames(state, from, output.frames);
        output.deliver
    }

    /// Reads one whole multipart message: `Some((sender, frame))` if it is
    /// `[node-<id>, frame]`, `None` if it is malformed (every part is consumed either way, so
    /// the next read starts clean).
    fn receive_one(&self, socket: &zmq::Socket) -> Result<Option<(u64, zmq::Message)>, zmq::Error> {
        let identity = socket.recv_msg(zmq::DONTWAIT)?;
        let payload = if socket.get_rcvmore()? {
            Some(socket.recv_msg(zmq::DONTWAIT)?)
        } else {
            None
        };
        let mut extra_parts = false;
        while socket.get_rcvmore()? {
            // Discard without keeping: a peer must not make us buffer unbounded parts.
            let _ = socket.recv_msg(zmq::DONTWAIT)?;
            extra_parts = true;
        }
        let (Some(from), Some(payload), false) =
            (parse_node_identity(&identity), payload, extra_parts)
        else {
            tracing::debug!(subsystem = "transport", node = self.node_id,
                identity = %String::from_utf8_lossy(&identity), "dropped a malformed message");
            return Ok(None);
        };
        Ok(Some((from, payload)))
    }

    fn flush_outbox(&self, state: &mut Loop) {
        if state.consumer_gone {
            state.outbox.clear();
            return;
        }
        while let Some(event) = state.outbox.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    state.outbox.push_front(event);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    tracing::debug!(
                        subsystem = "transport",
                        node = self.node_id,
                        "event receiver dropped; discarding inbound events"
                    );
                    state.consumer_gone = true;
                    state.outbox.clear();
                    return;
                }
            }
        }
    }
}
