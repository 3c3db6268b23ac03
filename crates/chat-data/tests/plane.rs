//! Single-machine behaviour of `DataPlane`: term fencing, the one-node cluster, routing errors.

use std::time::{Duration, Instant};

use chat_data::{
    Action, Body, ClientRequest, CommittedBatch, DataConfig, DataPlane, Entry, Frame, LocalLog,
    Place, Position, Request, RequestId, RequestKind, RetryableError, WriteResult,
};

fn drain(plane: &mut DataPlane) -> (Vec<Action>, Vec<(u64, Frame)>) {
    let mut actions = Vec::new();
    while let Some(action) = plane.poll_action() {
        actions.push(action);
    }
    let mut frames = Vec::new();
    while let Some(t) = plane.poll_transmit() {
        frames.push((t.to, Frame::decode(&t.payload).expect("own frames decode")));
    }
    (actions, frames)
}

fn lone_writer(now: Instant) -> DataPlane {
    let mut plane = DataPlane::new(now, DataConfig::new(1), LocalLog::default());
    plane.set_place(
        now,
        Place {
            term: 3,
            is_root: true,
            writable: true,
            input: true,
            cluster_size: 1,
            ..Place::default()
        },
    );
    let (actions, _) = drain(&mut plane);
    // A new writer's log ends in an older term: it first appends its term barrier.
    assert_eq!(
        actions,
        vec![Action::AppendEntries(vec![Entry {
            position: Position::new(3, 1),
            payload: vec![],
        }])]
    );
    plane
}

#[test]
fn a_one_node_cluster_answers_a_write_once_it_is_durable() {
    let now = Instant::now();
    let mut plane = lone_writer(now);
    let id = plane.submit(
        now,
        ClientRequest {
            is_write: true,
            min_epoch: 0,
            payload: b"hello".to_vec(),
        },
    );
    let (actions, _) = drain(&mut plane);
    let [Action::ExecuteWrite { term: 3, request }] = actions.as_slice() else {
        panic!("expected one write to execute, got {actions:?}");
    };
    assert_eq!(request.kind, RequestKind::Write);
    let entry = Entry {
        position: Position::new(3, 2),
        payload: b"op".to_vec(),
    };
    plane.committed(
        now,
        CommittedBatch {
            term: 3,
            entries: vec![entry],
            results: vec![WriteResult {
                id,
                epoch: 2,
                outcome: Ok(b"ok".to_vec()),
            }],
            changes: vec![],
        },
    );
    let (actions, _) = drain(&mut plane);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Answer { .. })),
        "answered before the entry was durable: {actions:?}"
    );
    plane.local_durable(now, Position::new(3, 2));
    let (actions, _) = drain(&mut plane);
    assert!(actions.contains(&Action::CommitAdvanced(2)));
    assert!(actions.contains(&Action::Answer {
        id,
        epoch: 2,
        outcome: Ok(b"ok".to_vec())
    }));
    assert!(plane.writer_reachable(now));
}

#[test]
fn frames_of_another_term_are_refused_and_counted() {
    let now = Instant::now();
    let mut plane = lone_writer(now);
    let stale = Frame::new(2, Body::Durable(vec![(5, 10)])).encode();
    let newer = Frame::new(4, Body::Durable(vec![(5, 10)])).encode();
    plane.handle_frame(now, 5, &stale);
    plane.handle_frame(now, 5, &newer);
    plane.handle_frame(now, 5, b"\xff\xff garbage");
    assert_eq!(plane.counters().frames_stale_term, 1);
    assert_eq!(plane.counters().frames_newer_term, 1);
    assert_eq!(plane.counters().frames_malformed, 1);
    assert_eq!(plane.counters().frames_received, 0);
}

#[test]
fn requests_without_a_writer_fail_retryably_and_time_out() {
    let now = Instant::now();
    let mut plane = DataPlane::new(now, DataConfig::new(7), LocalLog::default());
    let id = plane.submit(
        now,
        ClientRequest {
            is_write: true,
            min_epoch: 0,
            payload: vec![],
        },
    );
    let (actions, _) = drain(&mut plane);
    assert!(matches!(
        actions.as_slice(),
        [Action::Answer { id: got, outcome: Err(RetryableError::NoWriter), .. }] if *got == id
    ));
    // Attached under a parent that never answers: the deadline answers `Unavailable`.
    plane.set_place(
        now,
        Place {
            term: 1,
            parent: Some(1),
            input: true,
            cluster_size: 3,
            ..Place::default()
        },
    );
    let id = plane.submit(
        now,
        ClientRequest {
            is_write: false,
            min_epoch: 0,
            payload: vec![],
        },
    );
    let (_, frames) = drain(&mut plane);
    assert!(frames
        .iter()
        .any(|(to, f)| *to == 1 && matches!(f.body, Body::Request(_))));
    let later = now + Duration::from_secs(60);
    plane.handle_timeout(later);
    let (actions, _) = drain(&mut plane);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Answer { id: got, outcome: Err(RetryableError::Unavailable), .. } if *got == id
    )));
    assert!(!plane.writer_reachable(later));
}

#[test]
fn a_replica_told_not_to_answer_reads_passes_them_up() {
    let now = Instant::now();
    let read = |seq| {
        let request = Request {
            id: RequestId { origin: 9, seq },
            min_epoch: 0,
            kind: RequestKind::Read,
            confirm: false,
            payload: b"read".to_vec(),
        };
        Frame::new(3, Body::Request(request)).encode()
    };
    for replica_reads in [true, false] {
        let mut config = DataConfig::new(2);
        config.replica_reads = replica_reads;
        let mut replica = DataPlane::new(now, config, LocalLog::default());
        replica.set_place(
            now,
            Place {
                term: 3,
                replica: true,
                parent: Some(1),
                children: vec![9],
                routes: [(1, 1), (9, 9)].into_iter().collect(),
                cluster_size: 3,
                ..Place::default()
            },
        );
        drain(&mut replica);
        replica.handle_frame(now, 9, &read(1));
        let (actions, frames) = drain(&mut replica);
        let executed = actions.iter().any(|a| matches!(a, Action::ExecuteRead(_)));
        let passed_up = frames
            .iter()
            .any(|(to, frame)| *to == 1 && matches!(frame.body, Body::Request(_)));
        assert_eq!((executed, passed_up), (replica_reads, !replica_reads));
        let counters = replica.counters();
        assert_eq!(
            (counters.reads_local, counters.requests_forwarded),
            (u64::from(replica_reads), u64::from(!replica_reads))
        );
    }
}
