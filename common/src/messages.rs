//! The JSON messages that travel on the broker.
//!
//! Every message carries a `schema` number so that a worker can refuse a
//! message written by a newer producer instead of misreading it, and every
//! decode goes through [`decode`], which bounds the size and reports what is
//! wrong in words that end up in logs and dead-letter reasons.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The largest message body accepted. Real messages are a few hundred
/// bytes; anything this large is malformed or hostile.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why a message body could not be used. Never transient: a malformed
/// message stays malformed, so it is dead-lettered, not retried.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("message is not valid JSON for {kind}: {source}")]
    Malformed {
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error("message schema {found} is not supported (this build reads {SCHEMA_VERSION})")]
    UnsupportedSchema { found: u32 },
    #[error("invalid {kind} message: {reason}")]
    Invalid { kind: &'static str, reason: String },
}

/// A message type with its own validation.
pub trait Message: Serialize + DeserializeOwned {
    /// Name used in error messages.
    const KIND: &'static str;
    /// The schema version the message claims.
    fn schema(&self) -> u32;
    /// Checks the fields beyond what serde checks.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Parses and validates a message body.
pub fn decode<M: Message>(body: &[u8]) -> Result<M, MessageError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge(body.len()));
    }
    let msg: M = serde_json::from_slice(body).map_err(|source| MessageError::Malformed {
        kind: M::KIND,
        source,
    })?;
    if msg.schema() != SCHEMA_VERSION {
        return Err(MessageError::UnsupportedSchema {
            found: msg.schema(),
        });
    }
    msg.validate().map_err(|reason| MessageError::Invalid {
        kind: M::KIND,
        reason,
    })?;
    Ok(msg)
}

/// Serialises a message (infallible for these types; an error here is a bug).
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, MessageError> {
    serde_json::to_vec(msg).map_err(|source| MessageError::Malformed {
        kind: M::KIND,
        source,
    })
}

/// "Classify this recording for this task." Published once per task on
/// the `classify` queue; the task row holds the state, the message only
/// points at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyTask {
    pub schema: u32,
    pub task_id: Uuid,
    pub job_id: Uuid,
    /// Content hash of the recording; its bytes are at `audio/<sha256>`.
    pub file_sha256: String,
}

impl ClassifyTask {
    pub fn new(task_id: Uuid, job_id: Uuid, file_sha256: String) -> Self {
        Self {
            schema: SCHEMA_VERSION,
            task_id,
            job_id,
            file_sha256,
        }
    }
}

impl Message for ClassifyTask {
    const KIND: &'static str = "classify";
    fn schema(&self) -> u32 {
        self.schema
    }
    fn validate(&self) -> Result<(), String> {
        if crate::store::is_sha256_hex(&self.file_sha256) {
            Ok(())
        } else {
            Err("file_sha256 must be 64 lower-case hex characters".into())
        }
    }
}

/// What asked for a retrain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetrainTrigger {
    Api,
    Cli,
    Schedule,
    NewLabels,
}

/// "Train a new model." The run row (`retrain_runs.id`) is created by the
/// requester, so that the request can be followed before it is picked up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainRequest {
    pub schema: u32,
    pub run_id: Uuid,
    pub trigger: RetrainTrigger,
    /// Optional training parameters (epochs, seed, architecture …).
    #[serde(default)]
    pub params: serde_json::Value,
    /// Promote even if the new model does not beat the current one.
    #[serde(default)]
    pub force_promote: bool,
}

impl Message for RetrainRequest {
    const KIND: &'static str = "retrain";
    fn schema(&self) -> u32 {
        self.schema
    }
    fn validate(&self) -> Result<(), String> {
        if self.params.is_null() || self.params.is_object() {
            Ok(())
        } else {
            Err("params must be a JSON object".into())
        }
    }
}

/// What happened to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelEventKind {
    /// `version` is now the one every worker should serve.
    Promoted,
}

/// Broadcast on the model-events fanout exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEvent {
    pub schema: u32,
    pub kind: ModelEventKind,
    pub version: String,
}

impl Message for ModelEvent {
    const KIND: &'static str = "model event";
    fn schema(&self) -> u32 {
        self.schema
    }
    fn validate(&self) -> Result<(), String> {
        if self.version.is_empty() || self.version.len() > 100 {
            Err("version must be 1 to 100 characters".into())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_round_trip() {
        let m = ClassifyTask::new(Uuid::new_v4(), Uuid::new_v4(), "a".repeat(64));
        let back: ClassifyTask = decode(&encode(&m).unwrap()).unwrap();
        assert_eq!(m, back);
    }

    #[test]
    fn malformed_messages_are_refused_with_reasons() {
        let too_big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode::<ClassifyTask>(&too_big),
            Err(MessageError::TooLarge(_))
        ));
        assert!(matches!(
            decode::<ClassifyTask>(b"not json"),
            Err(MessageError::Malformed { .. })
        ));
        let future = format!(
            r#"{{"schema":2,"task_id":"{}","job_id":"{}","file_sha256":"{}"}}"#,
            Uuid::new_v4(),
            Uuid::new_v4(),
            "a".repeat(64)
        );
        assert!(matches!(
            decode::<ClassifyTask>(future.as_bytes()),
            Err(MessageError::UnsupportedSchema { found: 2 })
        ));
        let bad_hash = format!(
            r#"{{"schema":1,"task_id":"{}","job_id":"{}","file_sha256":"../etc/passwd"}}"#,
            Uuid::new_v4(),
            Uuid::new_v4()
        );
        let err = decode::<ClassifyTask>(bad_hash.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("file_sha256"), "{err}");
        let extra = format!(
            r#"{{"schema":1,"task_id":"{}","job_id":"{}","file_sha256":"{}","x":1}}"#,
            Uuid::new_v4(),
            Uuid::new_v4(),
            "a".repeat(64)
        );
        assert!(decode::<ClassifyTask>(extra.as_bytes()).is_err());
    }

    #[test]
    fn retrain_params_must_be_an_object() {
        let body = format!(
            r#"{{"schema":1,"run_id":"{}","trigger":"api","params":[1]}}"#,
            Uuid::new_v4()
        );
        assert!(decode::<RetrainRequest>(body.as_bytes()).is_err());
        let body = format!(
            r#"{{"schema":1,"run_id":"{}","trigger":"new_labels"}}"#,
            Uuid::new_v4()
        );
        let m: RetrainRequest = decode(body.as_bytes()).unwrap();
        assert_eq!(m.trigger, RetrainTrigger::NewLabels);
        assert!(!m.force_promote);
    }
}
