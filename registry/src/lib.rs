//! The model registry: the one place that names a model's objects, writes
//! `model_versions`, and decides which model the system serves.
//!
//! Where it sits: after training and before classification. The retrainer
//! [`publish`](artifacts::publish)es what it trained and promotes it through
//! the gate; the worker and the API [`serve`](serving::Models) the promoted
//! version; the retrainer's command line and the API promote, roll back,
//! request retrains and reclassify through [`lifecycle`]. Tests publish
//! their models the same way.
//!
//! * [`artifacts`]: immutable, checksum-verified model objects.
//! * [`lifecycle`]: promotion (and so rollback), retrain requests,
//!   reclassification, and requeueing the tasks that waited for a model.
//! * [`serving`]: the hot-swapped model a worker or the API classifies with.

pub mod artifacts;
mod error;
pub mod lifecycle;
pub mod serving;

pub use artifacts::{NewVersion, StoredVersion};
pub use error::{LoadError, RegistryError};
pub use lifecycle::{
    PromotedAndRequeued, Promotion, Reclassification, Selection, promote, promote_and_requeue,
    reclassify, request_retrain, requeue_awaiting,
};
pub use serving::{LoadedModel, Models};
