//! How the cluster manager's work can fail.

use berth_domain::elb::ElbError;
use berth_domain::EcsError;
use berth_store::StoreError;

/// A failure of the cluster manager. Each protocol adapter maps it to its
/// own errors in one place; a store failure is never shown to a client as
/// more than an internal error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// A request ECS refuses, in ECS's words.
    #[error(transparent)]
    Ecs(#[from] EcsError),
    /// A request ELBv2 refuses, in ELBv2's words.
    #[error(transparent)]
    Elb(#[from] ElbError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The cluster manager could not finish the work (its placement turn
    /// went away, its snapshot stopped following the store).
    #[error("internal: {0}")]
    Internal(String),
}
