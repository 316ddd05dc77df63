//! What every birdsong role shares: configuration, logging, the message
//! types and the clients for the three services the system runs on.
//!
//! Where it sits: under everything that talks to a service (ingest,
//! registry and the four roles); above only the audio library, whose
//! window settings it builds from configuration.
//!
//! * [`config`]: `BIRDSONG_*` environment variables parsed once into a typed
//!   [`Config`].
//! * [`telemetry`]: `tracing` set-up, text or JSON.
//! * [`db`]: PostgreSQL pool and migrations (the schema lives in
//!   `migrations/` at the repository root).
//! * [`queue`]: RabbitMQ topology and confirmed publishing.
//! * [`messages`]: the versioned JSON messages on the queues.
//! * [`store`]: the S3 object store, content-addressed for audio.
//! * [`jobs`]: submitting recordings as queued tasks, crash-safely.
//! * [`recorded`] and [`wav_metadata`]: when, where and on what a recording
//!   was made, from its file name and its WAV header.
//! * [`retry`]: waiting for a service with jittered exponential back-off.
//! * [`shutdown`]: SIGTERM and SIGINT as a stop flag, the same in every role.
//!
//! The audio and model libraries do not depend on this crate: they are pure
//! computation, and this crate is pure plumbing.

pub mod cli;
pub mod config;
pub mod db;
pub mod health;
pub mod jobs;
pub mod messages;
pub mod queue;
pub mod recorded;
pub mod retry;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod wav_metadata;

pub use config::Config;
