//! Configuration from the environment.
//!
//! Every role reads the same `BIRDSONG_*` variables, parsed once at start-up
//! into a typed [`Config`]. Defaults point at the services of a developer
//! machine (PostgreSQL and RabbitMQ on localhost, the `birdsong-s3` object
//! store on port 9000), so any binary runs with no flags at all. A value that
//! does not parse stops the process at once with a message naming the
//! variable, rather than failing later in some unrelated place.
//!
//! [`SETTINGS`] is the single list of variables: parsing, the README's table
//! and the check that `docker-compose.yml` only sets known variables all
//! derive from it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// One configuration variable: its name, default and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

const fn s(name: &'static str, default: &'static str, help: &'static str) -> Setting {
    Setting {
        name,
        default,
        help,
    }
}

/// BirdNET windows per network run unless `BIRDSONG_BIRDNET_BATCH` says otherwise
/// (must match that setting's default below; a test checks).
pub const DEFAULT_BIRDNET_BATCH: usize = 1;
/// Largest `BIRDSONG_BIRDNET_BATCH`: every window of a batch is held as two
/// spectrograms (~0.4 MB) and the network's activations grow with it.
pub const MAX_BIRDNET_BATCH: usize = 64;

/// Classify messages a worker holds per analysis thread unless
/// `BIRDSONG_WORKER_PREFETCH` says otherwise. A task waits on the object
/// store and the database longer than it computes on a short recording: a
/// one-thread worker at a full core drained 10-s clips at 371, 687, 1 200,
/// 1 349 and 1 285 audio s/s with 2, 4, 8, 16 and 32 in hand; on 0.1-core
/// hosts 2 to 16 made no difference (README, "Many small hosts").
pub const PREFETCH_PER_THREAD: u16 = 16;
/// Ceiling of the per-thread default: every task in hand may hold a fetched
/// recording in memory (up to 16 MiB), so 256 bound that at 4 GiB.
pub const MAX_DEFAULT_PREFETCH: u16 = 256;

/// Every variable birdsong reads, with its default.
pub const SETTINGS: &[Setting] = &[
    s(
        "BIRDSONG_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/birdsong",
        "PostgreSQL connection URL; the database is created if missing",
    ),
    s(
        "BIRDSONG_DATABASE_MAX_CONNECTIONS",
        "10",
        "connection pool size per process",
    ),
    s(
        "BIRDSONG_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "RabbitMQ connection URL",
    ),
    s(
        "BIRDSONG_QUEUE_PREFIX",
        "",
        "prefix for every queue and exchange name (isolates deployments and test runs on one broker)",
    ),
    s(
        "BIRDSONG_CLASSIFY_QUEUE",
        "classify",
        "queue of classification tasks",
    ),
    s(
        "BIRDSONG_RETRAIN_QUEUE",
        "retrain",
        "queue of retrain requests",
    ),
    s(
        "BIRDSONG_MODEL_EXCHANGE",
        "model.events",
        "fanout exchange announcing promoted models",
    ),
    s(
        "BIRDSONG_DELIVERY_LIMIT",
        "5",
        "deliveries of one message before it is dead-lettered",
    ),
    s(
        "BIRDSONG_S3_ENDPOINT",
        "http://127.0.0.1:9000",
        "S3-protocol endpoint (MinIO, birdsong-s3 or AWS)",
    ),
    s("BIRDSONG_S3_REGION", "us-east-1", "S3 region"),
    s(
        "BIRDSONG_S3_LISTEN",
        "127.0.0.1:9000",
        "where the bundled birdsong-s3 server listens (single-machine stack only)",
    ),
    s(
        "BIRDSONG_S3_BUCKET",
        "birdsong",
        "bucket for audio and models",
    ),
    s(
        "BIRDSONG_S3_ACCESS_KEY",
        "birdsong",
        "S3 access key id; set it and the secret key both empty to use the standard AWS credential chain",
    ),
    s(
        "BIRDSONG_S3_SECRET_KEY",
        "birdsong-secret",
        "S3 secret key (empty with an empty access key: the AWS credential chain)",
    ),
    s(
        "BIRDSONG_S3_PATH_STYLE",
        "true",
        "path-style bucket addressing (needed for MinIO and birdsong-s3)",
    ),
    s(
        "BIRDSONG_S3_TIMEOUT_SECS",
        "60",
        "timeout of one object store operation",
    ),
    s(
        "BIRDSONG_S3_PART_BYTES",
        "67108864",
        "files larger than this are uploaded in parts of this size (at least 5242880), each part one operation",
    ),
    s(
        "BIRDSONG_WORKER_PREFETCH",
        "0",
        "unacknowledged classify messages one worker holds (0: 16 per analysis thread, at most 256; each may hold up to 16 MiB of a fetched recording)",
    ),
    s(
        "BIRDSONG_WORKER_THREADS",
        "0",
        "threads for decoding, features and inference (0: one per core)",
    ),
    s(
        "BIRDSONG_WINDOW_SECONDS",
        "5",
        "length of an analysis window in seconds",
    ),
    s(
        "BIRDSONG_WINDOW_HOP_SECONDS",
        "5",
        "step between window starts (less than the length for overlap)",
    ),
    s(
        "BIRDSONG_BACKBONE",
        "acoustic",
        "what workers analyse recordings with while no model is in service: acoustic (built-in features) or birdnet (BirdNET V2.4 embeddings; needs scripts/birdnet/install.sh). A model in service always gets its own backbone",
    ),
    s(
        "BIRDSONG_BIRDNET_DIR",
        "",
        "the BirdNET install (empty: $HOME/.local/share/birdsong/birdnet, where scripts/birdnet/install.sh puts it)",
    ),
    s(
        "BIRDSONG_BIRDNET_OVERLAP_SECONDS",
        "0",
        "overlap of BirdNET's 3-s windows (0 to 2.9; BirdNET-Analyzer's --overlap)",
    ),
    s(
        "BIRDSONG_BIRDNET_BATCH",
        "1",
        "BirdNET windows of one recording run through the network at once (1 to 64; on the machines measured, larger batches cost more per window: see birdsong-bench backbones --birdnet-batch)",
    ),
    s(
        "BIRDSONG_MAX_FILE_BYTES",
        "2147483648",
        "largest audio file accepted, in bytes",
    ),
    s(
        "BIRDSONG_METRICS_LISTEN",
        "127.0.0.1:9464",
        "where workers serve Prometheus metrics and /healthz, /readyz (empty: off)",
    ),
    s(
        "BIRDSONG_RETRAINER_LISTEN",
        "127.0.0.1:9463",
        "where the retrainer serves /healthz and /readyz (empty: off)",
    ),
    s(
        "BIRDSONG_API_LISTEN",
        "127.0.0.1:8080",
        "API listen address",
    ),
    s(
        "BIRDSONG_API_KEYS",
        "",
        "comma-separated API keys accepted for writes (empty: writes refused)",
    ),
    s(
        "BIRDSONG_API_OPEN_READS",
        "true",
        "whether reads are allowed without a key",
    ),
    s(
        "BIRDSONG_API_MAX_BODY_BYTES",
        "4294967296",
        "largest API request body, in bytes (uploads; each file is also held to BIRDSONG_MAX_FILE_BYTES)",
    ),
    s(
        "BIRDSONG_API_MAX_FILES",
        "100",
        "most files (parts) in one API upload",
    ),
    s(
        "BIRDSONG_API_RATE_PER_SECOND",
        "50",
        "sustained API requests per second allowed per key (or per address without a key)",
    ),
    s(
        "BIRDSONG_API_RATE_BURST",
        "100",
        "API requests allowed at once above the sustained rate",
    ),
    s(
        "BIRDSONG_API_CLASSIFY_MAX_BYTES",
        "20971520",
        "largest file POST /v1/classify accepts, in bytes",
    ),
    s(
        "BIRDSONG_API_CLASSIFY_MAX_SECONDS",
        "120",
        "longest recording POST /v1/classify accepts, in seconds",
    ),
    s(
        "BIRDSONG_LOG",
        "info",
        "log filter (tracing EnvFilter syntax, e.g. info,birdsong_worker=debug)",
    ),
    s(
        "BIRDSONG_LOG_FORMAT",
        "text",
        "log output: text (human-readable) or json",
    ),
];

/// A variable whose value could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

/// Log output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where PostgreSQL is.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

/// Names of the broker objects. All carry the deployment's prefix, so that
/// two deployments (or two test runs) can share one broker.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub amqp_url: String,
    pub classify: String,
    pub retrain: String,
    pub model_exchange: String,
    pub delivery_limit: u32,
}

impl QueueConfig {
    /// The dead-letter queue paired with `queue`.
    pub fn dead_letter(queue: &str) -> String {
        format!("{queue}.dead")
    }
}

/// S3's smallest part of a multipart upload (every part but the last).
pub const MIN_S3_PART_BYTES: u64 = 5 * 1024 * 1024;

/// Where objects live.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Static credentials; both empty means the standard AWS credential
    /// chain (see [`S3Config::uses_credential_chain`]). Never one without
    /// the other: parsing refuses that.
    pub access_key: String,
    pub secret_key: String,
    pub path_style: bool,
    pub timeout: Duration,
    /// Files above this size go up as a multipart upload in parts of this
    /// size, so that each request fits in `timeout` whatever the file's size.
    pub part_bytes: u64,
}

impl S3Config {
    /// Whether credentials come from the standard AWS chain (environment,
    /// shared files, web identity, container or instance role) rather than
    /// from the static keys: clusters hand pods short-lived credentials that
    /// no static setting could hold.
    pub fn uses_credential_chain(&self) -> bool {
        self.access_key.is_empty() && self.secret_key.is_empty()
    }
}

/// Worker tuning.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub prefetch: u16,
    /// Zero means one thread per core.
    pub threads: usize,
    pub window_seconds: f64,
    pub hop_seconds: f64,
    pub metrics_listen: Option<SocketAddr>,
    /// `acoustic` or `birdnet`: the backbone used while no model is in service.
    pub backbone: String,
    /// The BirdNET install; `None` for the installer's default.
    pub birdnet_dir: Option<std::path::PathBuf>,
    /// Overlap of BirdNET's 3-s windows, in seconds.
    pub birdnet_overlap_seconds: f64,
    /// BirdNET windows per network run.
    pub birdnet_batch: usize,
}

impl WorkerConfig {
    /// The analysis windows every role cuts recordings into: the worker when
    /// it stores features, the retrainer when it reads them back, the api
    /// when it classifies an upload. One place, so the three cannot disagree
    /// (features stored under one window would never be found under another).
    pub fn window(&self) -> birdsong_audio::WindowConfig {
        birdsong_audio::WindowConfig {
            length_s: self.window_seconds,
            hop_s: self.hop_seconds,
            ..birdsong_audio::WindowConfig::default()
        }
    }
}

/// HTTP API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub keys: Vec<String>,
    pub open_reads: bool,
    pub max_body_bytes: u64,
    pub max_files: usize,
    pub rate_per_second: f64,
    pub rate_burst: u32,
    pub classify_max_bytes: u64,
    pub classify_max_seconds: f64,
}

/// The whole configuration of a birdsong process.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub queues: QueueConfig,
    pub s3: S3Config,
    pub worker: WorkerConfig,
    pub api: ApiConfig,
    pub max_file_bytes: u64,
    /// Where the retrainer answers health checks; `None`: nowhere.
    pub retrainer_listen: Option<SocketAddr>,
    pub log_filter: String,
    pub log_format: LogFormat,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads from an explicit map (tests, or a process that builds its own).
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| map.get(name).cloned())
    }

    /// Parses every setting through `lookup`, falling back to the defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let r = Reader { lookup: &lookup };
        let prefix = r.string("BIRDSONG_QUEUE_PREFIX");
        let name = |var: &'static str| -> Result<String, ConfigError> {
            let value = r.string(var);
            if value.is_empty() || value.len() > 200 {
                return Err(r.invalid(var, value, "must be 1 to 200 characters"));
            }
            Ok(format!("{prefix}{value}"))
        };
        let window_seconds: f64 = r.parse("BIRDSONG_WINDOW_SECONDS")?;
        if !(window_seconds.is_finite() && (0.5..=600.0).contains(&window_seconds)) {
            return Err(r.invalid(
                "BIRDSONG_WINDOW_SECONDS",
                window_seconds.to_string(),
                "must be between 0.5 and 600 seconds",
            ));
        }
        let hop_seconds: f64 = r.parse("BIRDSONG_WINDOW_HOP_SECONDS")?;
        if !(hop_seconds.is_finite() && hop_seconds >= 0.1 && hop_seconds <= window_seconds) {
            return Err(r.invalid(
                "BIRDSONG_WINDOW_HOP_SECONDS",
                hop_seconds.to_string(),
                "must be at least 0.1 and at most the window length",
            ));
        }
        let backbone = r.string("BIRDSONG_BACKBONE");
        if !["acoustic", "birdnet"].contains(&backbone.as_str()) {
            return Err(r.invalid("BIRDSONG_BACKBONE", backbone, "must be acoustic or birdnet"));
        }
        let birdnet_dir = Some(r.string("BIRDSONG_BIRDNET_DIR"))
            .filter(|d| !d.is_empty())
            .map(std::path::PathBuf::from);
        let birdnet_overlap_seconds: f64 = r.parse("BIRDSONG_BIRDNET_OVERLAP_SECONDS")?;
        if !(birdnet_overlap_seconds.is_finite() && (0.0..=2.9).contains(&birdnet_overlap_seconds))
        {
            return Err(r.invalid(
                "BIRDSONG_BIRDNET_OVERLAP_SECONDS",
                birdnet_overlap_seconds.to_string(),
                "must be between 0 and 2.9 seconds",
            ));
        }
        let birdnet_batch: usize = r.parse("BIRDSONG_BIRDNET_BATCH")?;
        if !(1..=MAX_BIRDNET_BATCH).contains(&birdnet_batch) {
            return Err(r.invalid(
                "BIRDSONG_BIRDNET_BATCH",
                birdnet_batch.to_string(),
                "must be between 1 and 64 windows",
            ));
        }
        let optional_addr = |name: &'static str| -> Result<Option<SocketAddr>, ConfigError> {
            if r.string(name).is_empty() {
                Ok(None)
            } else {
                Ok(Some(r.parse(name)?))
            }
        };
        let metrics_listen = optional_addr("BIRDSONG_METRICS_LISTEN")?;
        let retrainer_listen = optional_addr("BIRDSONG_RETRAINER_LISTEN")?;
        let log_format = match r.string("BIRDSONG_LOG_FORMAT").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(r.invalid(
                    "BIRDSONG_LOG_FORMAT",
                    other.to_string(),
                    "must be text or json",
                ));
            }
        };
        let delivery_limit: u32 = r.parse("BIRDSONG_DELIVERY_LIMIT")?;
        if delivery_limit == 0 {
            return Err(r.invalid("BIRDSONG_DELIVERY_LIMIT", "0".into(), "must be at least 1"));
        }
        let prefetch: u16 = r.parse("BIRDSONG_WORKER_PREFETCH")?;
        let endpoint = r.string("BIRDSONG_S3_ENDPOINT");
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(r.invalid(
                "BIRDSONG_S3_ENDPOINT",
                endpoint,
                "must be an http:// or https:// URL",
            ));
        }
        let database_url = r.string("BIRDSONG_DATABASE_URL");
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(r.invalid(
                "BIRDSONG_DATABASE_URL",
                database_url,
                "must be a postgres:// URL",
            ));
        }
        let amqp_url = r.string("BIRDSONG_AMQP_URL");
        if !(amqp_url.starts_with("amqp://") || amqp_url.starts_with("amqps://")) {
            return Err(r.invalid("BIRDSONG_AMQP_URL", amqp_url, "must be an amqp:// URL"));
        }
        let bucket = r.string("BIRDSONG_S3_BUCKET");
        if !valid_bucket_name(&bucket) {
            return Err(r.invalid(
                "BIRDSONG_S3_BUCKET",
                bucket,
                "must be 3-63 lowercase letters, digits, dots or hyphens",
            ));
        }
        let timeout_secs: u64 = r.parse("BIRDSONG_S3_TIMEOUT_SECS")?;
        if timeout_secs == 0 {
            return Err(r.invalid("BIRDSONG_S3_TIMEOUT_SECS", "0".into(), "must be at least 1"));
        }
        let access_key = r.string("BIRDSONG_S3_ACCESS_KEY");
        let secret_key = r.string("BIRDSONG_S3_SECRET_KEY");
        // One key without the other is a mistake (a missing Secret entry, a
        // typo), not a request for the credential chain: say so now rather
        // than sign every request with half a key.
        if access_key.is_empty() != secret_key.is_empty() {
            let (variable, other) = if access_key.is_empty() {
                ("BIRDSONG_S3_ACCESS_KEY", "BIRDSONG_S3_SECRET_KEY")
            } else {
                ("BIRDSONG_S3_SECRET_KEY", "BIRDSONG_S3_ACCESS_KEY")
            };
            return Err(r.invalid(
                variable,
                String::new(),
                &format!(
                    "is empty but {other} is set: set both for static keys, or both empty for \
                     the AWS credential chain"
                ),
            ));
        }
        let part_bytes: u64 = r.parse("BIRDSONG_S3_PART_BYTES")?;
        if part_bytes < MIN_S3_PART_BYTES {
            return Err(r.invalid(
                "BIRDSONG_S3_PART_BYTES",
                part_bytes.to_string(),
                &format!("must be at least {MIN_S3_PART_BYTES} (S3's smallest part)"),
            ));
        }
        let rate_per_second: f64 = r.parse("BIRDSONG_API_RATE_PER_SECOND")?;
        if !(rate_per_second.is_finite() && rate_per_second > 0.0) {
            return Err(r.invalid(
                "BIRDSONG_API_RATE_PER_SECOND",
                rate_per_second.to_string(),
                "must be a positive number",
            ));
        }
        let classify_max_seconds: f64 = r.parse("BIRDSONG_API_CLASSIFY_MAX_SECONDS")?;
        if !(classify_max_seconds.is_finite() && classify_max_seconds > 0.0) {
            return Err(r.invalid(
                "BIRDSONG_API_CLASSIFY_MAX_SECONDS",
                classify_max_seconds.to_string(),
                "must be a positive number",
            ));
        }
        Ok(Config {
            database: DatabaseConfig {
                url: database_url,
                max_connections: r.parse("BIRDSONG_DATABASE_MAX_CONNECTIONS")?,
            },
            queues: QueueConfig {
                amqp_url,
                classify: name("BIRDSONG_CLASSIFY_QUEUE")?,
                retrain: name("BIRDSONG_RETRAIN_QUEUE")?,
                model_exchange: name("BIRDSONG_MODEL_EXCHANGE")?,
                delivery_limit,
            },
            s3: S3Config {
                endpoint,
                region: r.string("BIRDSONG_S3_REGION"),
                bucket,
                access_key,
                secret_key,
                path_style: r.parse_bool("BIRDSONG_S3_PATH_STYLE")?,
                timeout: Duration::from_secs(timeout_secs),
                part_bytes,
            },
            worker: WorkerConfig {
                prefetch,
                threads: r.parse("BIRDSONG_WORKER_THREADS")?,
                window_seconds,
                hop_seconds,
                metrics_listen,
                backbone,
                birdnet_dir,
                birdnet_overlap_seconds,
                birdnet_batch,
            },
            api: ApiConfig {
                listen: r.parse("BIRDSONG_API_LISTEN")?,
                keys: r
                    .string("BIRDSONG_API_KEYS")
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .collect(),
                open_reads: r.parse_bool("BIRDSONG_API_OPEN_READS")?,
                max_body_bytes: r.parse("BIRDSONG_API_MAX_BODY_BYTES")?,
                max_files: r.parse("BIRDSONG_API_MAX_FILES")?,
                rate_per_second,
                rate_burst: r.parse("BIRDSONG_API_RATE_BURST")?,
                classify_max_bytes: r.parse("BIRDSONG_API_CLASSIFY_MAX_BYTES")?,
                classify_max_seconds,
            },
            max_file_bytes: r.parse("BIRDSONG_MAX_FILE_BYTES")?,
            retrainer_listen,
            log_filter: r.string("BIRDSONG_LOG"),
            log_format,
        })
    }

    /// Unacknowledged classify messages the worker asks the broker for:
    /// `BIRDSONG_WORKER_PREFETCH`, or [`PREFETCH_PER_THREAD`] per analysis
    /// thread when that is 0 (the default), at most [`MAX_DEFAULT_PREFETCH`].
    ///
    /// A task spends part of its life waiting on the object store and the
    /// database, so each analysis thread needs several tasks in hand to stay
    /// busy; a fixed number would starve a worker on a many-core host and
    /// let a one-core worker hoard tasks other workers could take.
    pub fn prefetch(&self) -> u16 {
        if self.worker.prefetch > 0 {
            return self.worker.prefetch;
        }
        let threads = u16::try_from(self.cpu_threads()).unwrap_or(u16::MAX);
        threads
            .saturating_mul(PREFETCH_PER_THREAD)
            .clamp(1, MAX_DEFAULT_PREFETCH)
    }

    /// Number of CPU threads the worker should use.
    pub fn cpu_threads(&self) -> usize {
        if self.worker.threads > 0 {
            self.worker.threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// S3 bucket naming rules (the subset every implementation accepts).
fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

struct Reader<'a, F: Fn(&str) -> Option<String>> {
    lookup: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn setting(&self, name: &'static str) -> &'static Setting {
        // Every name used in this module is in SETTINGS; the unit test
        // `every_read_variable_is_declared` keeps it that way.
        SETTINGS
            .iter()
            .find(|s| s.name == name)
            .unwrap_or(&SETTINGS[0])
    }

    fn string(&self, name: &'static str) -> String {
        (self.lookup)(name).unwrap_or_else(|| self.setting(name).default.to_string())
    }

    fn invalid(&self, variable: &'static str, value: String, reason: &str) -> ConfigError {
        ConfigError {
            variable,
            value,
            reason: reason.to_string(),
        }
    }

    fn parse<T: FromStr>(&self, name: &'static str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.string(name);
        raw.trim()
            .parse()
            .map_err(|e: T::Err| self.invalid(name, raw.clone(), &e.to_string()))
    }

    fn parse_bool(&self, name: &'static str) -> Result<bool, ConfigError> {
        let raw = self.string(name);
        match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(self.invalid(name, raw, "must be true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&map)
    }

    #[test]
    fn defaults_parse() {
        let c = with(&[]).expect("defaults must be valid");
        assert_eq!(c.queues.classify, "classify");
        assert_eq!(c.s3.bucket, "birdsong");
        assert_eq!(c.worker.window_seconds, 5.0);
        assert!(c.api.keys.is_empty());
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.worker.birdnet_batch, DEFAULT_BIRDNET_BATCH);
    }

    #[test]
    fn prefix_applies_to_every_broker_name() {
        let c = with(&[("BIRDSONG_QUEUE_PREFIX", "t1.")]).unwrap();
        assert_eq!(c.queues.classify, "t1.classify");
        assert_eq!(c.queues.retrain, "t1.retrain");
        assert_eq!(c.queues.model_exchange, "t1.model.events");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let cases = [
            ("BIRDSONG_WORKER_PREFETCH", "lots"),
            ("BIRDSONG_WORKER_PREFETCH", "70000"),
            ("BIRDSONG_DATABASE_MAX_CONNECTIONS", "-1"),
            ("BIRDSONG_API_LISTEN", "localhost"),
            ("BIRDSONG_S3_PATH_STYLE", "maybe"),
            ("BIRDSONG_S3_ENDPOINT", "ftp://x"),
            ("BIRDSONG_S3_BUCKET", "Bad_Bucket"),
            ("BIRDSONG_LOG_FORMAT", "xml"),
            ("BIRDSONG_WINDOW_SECONDS", "NaN"),
            ("BIRDSONG_WINDOW_HOP_SECONDS", "9"),
            ("BIRDSONG_DATABASE_URL", "mysql://x"),
            ("BIRDSONG_AMQP_URL", "http://x"),
            ("BIRDSONG_DELIVERY_LIMIT", "0"),
            ("BIRDSONG_MAX_FILE_BYTES", "1e9"),
            ("BIRDSONG_BIRDNET_BATCH", "0"),
            ("BIRDSONG_BIRDNET_BATCH", "65"),
            ("BIRDSONG_S3_PART_BYTES", "1048576"),
        ];
        for (var, value) in cases {
            let err = with(&[(var, value)]).expect_err(var);
            assert_eq!(err.variable, var);
            let msg = err.to_string();
            assert!(msg.contains(var) && msg.contains(value), "{msg}");
        }
    }

    #[test]
    fn empty_s3_keys_select_the_credential_chain_and_half_set_keys_are_refused() {
        let c = with(&[
            ("BIRDSONG_S3_ACCESS_KEY", ""),
            ("BIRDSONG_S3_SECRET_KEY", ""),
        ])
        .unwrap();
        assert!(c.s3.uses_credential_chain());
        assert!(!with(&[]).unwrap().s3.uses_credential_chain());

        let err = with(&[("BIRDSONG_S3_SECRET_KEY", "")]).expect_err("secret missing");
        assert_eq!(err.variable, "BIRDSONG_S3_SECRET_KEY");
        assert!(
            err.to_string().contains("BIRDSONG_S3_ACCESS_KEY is set"),
            "{err}"
        );
        let err = with(&[
            ("BIRDSONG_S3_ACCESS_KEY", ""),
            ("BIRDSONG_S3_SECRET_KEY", "top-secret"),
        ])
        .expect_err("access key missing");
        assert_eq!(err.variable, "BIRDSONG_S3_ACCESS_KEY");
        // The message names the variables, never the secret's value.
        assert!(!err.to_string().contains("top-secret"), "{err}");
    }

    #[test]
    fn prefetch_defaults_to_a_share_per_analysis_thread() {
        let explicit = with(&[("BIRDSONG_WORKER_PREFETCH", "5")]).unwrap();
        assert_eq!(explicit.prefetch(), 5);
        let three = with(&[("BIRDSONG_WORKER_THREADS", "3")]).unwrap();
        assert_eq!(three.prefetch(), 3 * PREFETCH_PER_THREAD);
        let many = with(&[("BIRDSONG_WORKER_THREADS", "4000")]).unwrap();
        assert_eq!(many.prefetch(), MAX_DEFAULT_PREFETCH);
        // One thread per core: whatever this machine has, within bounds.
        let cores = with(&[]).unwrap();
        assert!(cores.prefetch() >= PREFETCH_PER_THREAD);
        assert!(cores.prefetch() <= MAX_DEFAULT_PREFETCH);
    }

    #[test]
    fn api_keys_are_split_and_trimmed() {
        let c = with(&[("BIRDSONG_API_KEYS", " a, b ,,c")]).unwrap();
        assert_eq!(c.api.keys, vec!["a", "b", "c"]);
    }

    #[test]
    fn every_read_variable_is_declared() {
        let full = include_str!("config.rs");
        // Only the code above the tests reads variables.
        let source = full.split("#[cfg(test)]").next().unwrap_or(full);
        let declared: std::collections::HashSet<&str> = SETTINGS.iter().map(|s| s.name).collect();
        assert_eq!(
            declared.len(),
            SETTINGS.len(),
            "a variable is declared twice"
        );
        let mut rest = source;
        let mut found = 0;
        while let Some(i) = rest.find("\"BIRDSONG_") {
            let tail = &rest[i + 1..];
            let end = tail.find('"').unwrap_or(tail.len());
            let name = &tail[..end];
            assert!(
                declared.contains(name),
                "{name} is read but not in SETTINGS"
            );
            found += 1;
            rest = &tail[end..];
        }
        assert!(found > SETTINGS.len());
    }
}
