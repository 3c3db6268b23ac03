//! bcrypt off the writer: the node a user talks to hashes at registration and verifies a
//! login against the hash it read, on tokio's blocking pool, at most one hash per CPU at a
//! time (a semaphore), so a burst of logins cannot starve the node's other blocking work.

use std::sync::{Arc, OnceLock};

use chat_store::SecretHash;
use tokio::sync::Semaphore;

use crate::error::ServiceError;
use crate::protocol::Password;

/// Hashes and verifies passwords with a fixed bcrypt cost and a bounded number of
/// concurrent hashes. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct PasswordHasher {
    cost: u32,
    permits: Semaphore,
    /// Verified against when a login names no user, so that a wrong name costs as much time
    /// as a wrong password and response times do not reveal which accounts exist.
    decoy: OnceLock<String>,
}

impl PasswordHasher {
    /// A hasher with bcrypt `cost` (4 to 31) and one permit per CPU.
    pub fn new(cost: u32) -> Result<Self, ServiceError> {
        if !(4..=31).contains(&cost) {
            return Err(ServiceError::invalid(format!(
                "bcrypt cost {cost} is outside 4..=31"
            )));
        }
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Ok(Self {
            cost,
            permits: Semaphore::new(cpus),
            decoy: OnceLock::new(),
        })
    }

    /// The process-wide hasher with bcrypt's default cost (12), used by dispatchers that do
    /// not bring their own.
    pub fn shared() -> &'static Arc<PasswordHasher> {
        static SHARED: OnceLock<Arc<PasswordHasher>> = OnceLock::new();
        SHARED.get_or_init(|| {
            Arc::new(Self::new(bcrypt::DEFAULT_COST).unwrap_or_else(|_| Self {
                cost: bcrypt::DEFAULT_COST,
                permits: Semaphore::new(1),
                decoy: OnceLock::new(),
            }))
        })
    }

    /// The bcrypt cost.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    async fn on_pool<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ServiceError::unavailable("The password check is shutting down."))?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&this))
            .await
            .map_err(|e| {
                tracing::error!(subsystem = "auth", error = %e, "password task failed");
                ServiceError::unavailable("The password check failed; try again.")
            })
    }

    /// Hashes a password (with a fresh salt).
    pub async fn hash(self: &Arc<Self>, password: Password) -> Result<SecretHash, ServiceError> {
        self.on_pool(move |this| bcrypt::hash(password.expose(), this.cost))
            .await?
            .map(SecretHash::new)
            .map_err(|e| {
                tracing::error!(subsystem = "auth", error = %e, "bcrypt failed");
                ServiceError::unavailable("Registration failed; try again later.")
            })
    }

    /// Whether `password` matches `hash`; with no hash (no such user) it checks against a
    /// decoy and answers false, taking the same time. A malformed stored hash is a mismatch.
    pub async fn verify(
        self: &Arc<Self>,
        password: Password,
        hash: Option<SecretHash>,
    ) -> Result<bool, ServiceError> {
        self.on_pool(move |this| match hash {
            Some(hash) => bcrypt::verify(password.expose(), hash.expose()).unwrap_or(false),
            None => {
                let decoy = this
                    .decoy
                    .get_or_init(|| bcrypt::hash("decoy password", this.cost).unwrap_or_default());
                let _ = bcrypt::verify(password.expose(), decoy);
                false
            }
        })
        .await
    }
}
