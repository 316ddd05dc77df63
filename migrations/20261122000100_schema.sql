-- birdsong schema, version 1.
--
-- The schema is the public query interface: the views at the end answer the
-- common questions in one SELECT, and every table has the unique keys that
-- make the pipeline's writes idempotent (a redelivered message upserts the
-- same rows instead of adding new ones).

-- Recordings, content-addressed: one row per distinct byte sequence.
CREATE TABLE audio_files (
    sha256          text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    object_key      text NOT NULL,
    original_name   text NOT NULL,            -- name it had when first seen
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    format          text,                     -- container, detected from content
    codec           text,
    sample_rate     integer CHECK (sample_rate > 0),
    channels        smallint CHECK (channels > 0),
    duration_s      double precision CHECK (duration_s >= 0),
    site            text,                     -- recorder or site name, if known
    recorded_at     timestamptz,              -- when the recording was made, if known
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Species the system knows, by the label string models use.
CREATE TABLE species (
    name            text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    scientific_name text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- A submission: one ingest run or one API upload.
CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    source          text NOT NULL CHECK (source IN ('producer', 'api', 'reclassify')),
    description     text NOT NULL DEFAULT '',
    -- Lets a re-run of the same ingest find and finish its job (resumable).
    idempotency_key text UNIQUE,
    files_accepted  integer NOT NULL DEFAULT 0,
    files_duplicate integer NOT NULL DEFAULT 0,
    files_rejected  integer NOT NULL DEFAULT 0,
    bytes_accepted  bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    submitted_at    timestamptz,              -- every task of the job is queued
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Entries of a submission that were refused before becoming tasks.
CREATE TABLE job_rejections (
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    path            text NOT NULL,
    reason          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, path)
);

-- One recording in one job. The same recording twice in a job is one task.
CREATE TABLE tasks (
    id              uuid PRIMARY KEY,
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    file_sha256     text NOT NULL REFERENCES audio_files (sha256),
    source_path     text NOT NULL,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'processing', 'done', 'failed', 'awaiting_model')),
    attempts        integer NOT NULL DEFAULT 0,
    error           text,
    error_kind      text,
    model_version   text,
    worker          text,
    queued_at       timestamptz,              -- set once the message is confirmed
    started_at      timestamptz,
    finished_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, file_sha256),
    CHECK (status <> 'failed' OR error IS NOT NULL)
);
CREATE INDEX tasks_job_status ON tasks (job_id, status);
CREATE INDEX tasks_file ON tasks (file_sha256);
CREATE INDEX tasks_unfinished ON tasks (status) WHERE status IN ('queued', 'processing');

-- Versions of the classifier. Exactly one may be promoted at a time.
CREATE TABLE model_versions (
    version         text PRIMARY KEY CHECK (length(version) BETWEEN 1 AND 100),
    object_prefix   text NOT NULL,
    architecture    text NOT NULL,
    feature_version text NOT NULL,
    input_size      integer NOT NULL CHECK (input_size > 0),
    classes         jsonb NOT NULL CHECK (jsonb_typeof(classes) = 'array'),
    metrics         jsonb NOT NULL DEFAULT '{}',
    checksum        text NOT NULL,
    status          text NOT NULL DEFAULT 'candidate'
                    CHECK (status IN ('candidate', 'promoted', 'retired', 'rejected')),
    status_reason   text,
    retrain_run_id  uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    promoted_at     timestamptz
);
CREATE UNIQUE INDEX model_versions_one_promoted ON model_versions ((true)) WHERE status = 'promoted';

-- Acoustic features of each analysis window, so that a new model can
-- classify a recording, and the retrainer can train, without decoding it.
CREATE TABLE window_features (
    file_sha256     text NOT NULL REFERENCES audio_files (sha256) ON DELETE CASCADE,
    feature_version text NOT NULL,
    window_s        real NOT NULL,            -- window length
    hop_s           real NOT NULL,            -- step between windows
    window_index    integer NOT NULL CHECK (window_index >= 0),
    start_s         double precision NOT NULL,
    end_s           double precision NOT NULL CHECK (end_s > start_s),
    features        real[] NOT NULL CHECK (cardinality(features) > 0),
    PRIMARY KEY (file_sha256, feature_version, window_s, hop_s, window_index)
);

-- One row per window per model version.
CREATE TABLE detections (
    id              bigserial PRIMARY KEY,
    file_sha256     text NOT NULL REFERENCES audio_files (sha256) ON DELETE CASCADE,
    model_version   text NOT NULL REFERENCES model_versions (version),
    window_index    integer NOT NULL CHECK (window_index >= 0),
    start_s         double precision NOT NULL,
    end_s           double precision NOT NULL CHECK (end_s > start_s),
    species         text NOT NULL,
    confidence      real NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    top_k           jsonb NOT NULL,           -- [{"species": …, "confidence": …}, …]
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (file_sha256, model_version, window_index)
);
CREATE INDEX detections_species_confidence ON detections (species, confidence DESC);

-- One row per recording per model version: the recording-level call.
CREATE TABLE file_summaries (
    file_sha256     text NOT NULL REFERENCES audio_files (sha256) ON DELETE CASCADE,
    model_version   text NOT NULL REFERENCES model_versions (version),
    species         text NOT NULL,
    confidence      real NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    top_k           jsonb NOT NULL,
    windows         integer NOT NULL CHECK (windows >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_sha256, model_version)
);
CREATE INDEX file_summaries_species ON file_summaries (species);

-- Ground truth for training: which species a recording is, and who said so.
CREATE TABLE labels (
    file_sha256     text NOT NULL REFERENCES audio_files (sha256) ON DELETE CASCADE,
    source          text NOT NULL CHECK (length(source) BETWEEN 1 AND 100),
    species         text NOT NULL REFERENCES species (name),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_sha256, source)
);
CREATE INDEX labels_species ON labels (species);

-- Each retrain request and what became of it; updated while it runs.
CREATE TABLE retrain_runs (
    id              uuid PRIMARY KEY,
    trigger         text NOT NULL,
    params          jsonb NOT NULL DEFAULT '{}',
    force_promote   boolean NOT NULL DEFAULT false,
    status          text NOT NULL DEFAULT 'requested'
                    CHECK (status IN ('requested', 'running', 'succeeded', 'failed', 'skipped')),
    progress        jsonb,
    data_summary    jsonb,
    metrics         jsonb,
    model_version   text REFERENCES model_versions (version),
    promoted        boolean,
    error           text,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);

ALTER TABLE model_versions
    ADD CONSTRAINT model_versions_retrain_run FOREIGN KEY (retrain_run_id) REFERENCES retrain_runs (id);

-- ---------------------------------------------------------------------------
-- Views: the questions users ask, one SELECT each.
-- ---------------------------------------------------------------------------

-- The label each recording is trained with: the most recent from any source.
CREATE VIEW current_labels AS
SELECT DISTINCT ON (file_sha256) file_sha256, species, source, updated_at
FROM labels
ORDER BY file_sha256, updated_at DESC, source;

-- The newest recording-level result of every recording.
CREATE VIEW latest_file_results AS
SELECT DISTINCT ON (s.file_sha256)
       s.file_sha256, f.original_name, f.duration_s, f.site, f.recorded_at,
       s.species, s.confidence, s.top_k, s.windows, s.model_version, s.created_at
FROM file_summaries s
JOIN audio_files f ON f.sha256 = s.file_sha256
ORDER BY s.file_sha256, s.created_at DESC;

-- Every detection of every job, with the recording's path in that job,
-- from the model version that classified the task.
CREATE VIEW job_detections AS
SELECT t.job_id, t.source_path, d.file_sha256, f.site, f.recorded_at,
       d.window_index, d.start_s, d.end_s, d.species, d.confidence, d.top_k,
       d.model_version
FROM tasks t
JOIN detections d ON d.file_sha256 = t.file_sha256 AND d.model_version = t.model_version
JOIN audio_files f ON f.sha256 = t.file_sha256;

-- Per-recording results of every job.
CREATE VIEW job_file_results AS
SELECT t.job_id, t.id AS task_id, t.source_path, t.file_sha256, t.status,
       t.error, s.species, s.confidence, s.top_k, s.windows, t.model_version,
       f.duration_s, f.site, f.recorded_at
FROM tasks t
JOIN audio_files f ON f.sha256 = t.file_sha256
LEFT JOIN file_summaries s ON s.file_sha256 = t.file_sha256 AND s.model_version = t.model_version;

-- Progress of every job.
CREATE VIEW job_progress AS
SELECT j.id AS job_id, j.source, j.description, j.created_at, j.submitted_at,
       count(t.id)                                              AS tasks,
       count(t.id) FILTER (WHERE t.status = 'queued')            AS queued,
       count(t.id) FILTER (WHERE t.status = 'processing')        AS processing,
       count(t.id) FILTER (WHERE t.status = 'done')              AS done,
       count(t.id) FILTER (WHERE t.status = 'awaiting_model')    AS awaiting_model,
       count(t.id) FILTER (WHERE t.status = 'failed')            AS failed,
       j.files_duplicate, j.files_rejected,
       coalesce(sum(f.duration_s) FILTER (WHERE t.status IN ('done', 'awaiting_model')), 0)
                                                                 AS audio_seconds_done,
       min(t.started_at)                                         AS first_started_at,
       max(t.finished_at)                                        AS last_finished_at,
       (j.submitted_at IS NOT NULL
        AND count(t.id) FILTER (WHERE t.status IN ('queued', 'processing')) = 0)
                                                                 AS finished
FROM jobs j
LEFT JOIN tasks t ON t.job_id = j.id
LEFT JOIN audio_files f ON f.sha256 = t.file_sha256
GROUP BY j.id;

-- How many recordings (by their recording-level call) and detections of
-- each species every job has.
CREATE VIEW job_species_counts AS
SELECT r.job_id, r.species,
       count(*)                          AS recordings,
       avg(r.confidence)::real           AS mean_confidence,
       sum(r.windows)                    AS windows
FROM job_file_results r
WHERE r.species IS NOT NULL
GROUP BY r.job_id, r.species;

-- Tasks that failed, and why.
CREATE VIEW failed_tasks AS
SELECT t.job_id, t.id AS task_id, t.source_path, t.file_sha256, t.error_kind,
       t.error, t.attempts, t.finished_at
FROM tasks t
WHERE t.status = 'failed';

-- The model every worker should serve.
CREATE VIEW promoted_model AS
SELECT * FROM model_versions WHERE status = 'promoted';
