//! The input node's [`Dispatcher`]: each typed request goes into the data plane (which sends it
//! up the tree, correlated by id, with a deadline) and its answer comes back typed.
//!
//! An answer that says "not here, not now" (no writer reachable, the writer not writable, a
//! replica behind) is retried after a short, growing pause while the request's time lasts;
//! retrying a write is safe because every write carries its request id, and the writer answers
//! a replay with the stored result. When the time is up the user gets `unavailable` (503 with
//! `Retry-After`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_data::{ClientRequest, RetryableError};
use chat_service::{Dispatcher, Epoch, PasswordHasher, Reply, Request, ServiceError};

use super::DataHandle;

/// First pause before a retry; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// Sends requests through this node's data plane.
#[derive(Debug, Clone)]
pub(crate) struct DataProxy {
    data: DataHandle,
    hasher: Arc<PasswordHasher>,
    /// How long one request may take, retries included.
    budget: Duration,
}

impl DataProxy {
    pub(crate) fn new(data: DataHandle, hasher: Arc<PasswordHasher>, budget: Duration) -> Self {
        DataProxy {
            data,
            hasher,
            budget,
        }
    }
}

/// Whether an answer means "ask again later" rather than "this is the answer".
fn retryable(error: &ServiceError) -> bool {
    matches!(
        error,
        ServiceError::NotWriter(_)
            | ServiceError::ReplicaBehind { .. }
            | ServiceError::Unavailable(_)
    )
}

fn unavailable(error: RetryableError) -> ServiceError {
    ServiceError::Unavailable(match error {
        RetryableError::NoWriter | RetryableError::NotWritable => {
            "No writer is reachable now; retry shortly.".to_owned()
        }
        RetryableError::Behind { .. } => "The data is catching up; retry shortly.".to_owned(),
        RetryableError::Unavailable => "The cluster did not answer in time; retry.".to_owned(),
        RetryableError::Storage => "A storage failure; retry.".to_owned(),
    })
}

impl Dispatcher for DataProxy {
    async fn dispatch(&self, request: Request, min_epoch: Epoch) -> Result<Reply, ServiceError> {
        let payload = chat_service::encode(&request)?;
        let is_write = request.is_write();
        let deadline = Instant::now() + self.budget;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let (_, outcome) = self
                .data
                .request(ClientRequest {
                    is_write,
                    min_epoch,
                    payload: payload.clone(),
                })
                .await?;
            let answer = match outcome {
                Ok(bytes) => chat_service::decode::<Result<Reply, ServiceError>>(&bytes)
                    .and_then(|answer| answer),
                Err(error) => Err(unavailable(error)),
            };
            match answer {
                Err(error) if retryable(&error) && Instant::now() + backoff < deadline => {
                    tracing::debug!(target: "input", subsystem = "input", %error, "retrying a request");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(ServiceError::NotWriter(_)) => {
                    return Err(unavailable(RetryableError::NoWriter))
                }
                Err(ServiceError::ReplicaBehind { have, want }) => {
                    return Err(unavailable(RetryableError::Behind { have, want }))
                }
                other => return other,
            }
        }
    }

    fn password_hasher(&self) -> &Arc<PasswordHasher> {
        &self.hasher
    }
}
