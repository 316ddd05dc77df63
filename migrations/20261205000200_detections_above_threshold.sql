-- Scores are not detections.
--
-- Until now every window got a row in `detections` naming its best-scoring
-- species, so a window of wind or of a species the model never saw was a
-- "detection" too. From here on:
--
-- * `window_scores` (the old table, renamed) keeps every window's best
--   species, its score and the top-k scores: what the model thought,
--   queryable whether or not anything was detected;
-- * `detections` holds only the (window, species) pairs whose score reached
--   that species' threshold (stored in the model artifact, chosen on held-out
--   recordings): no row for a window means "no detection", the normal answer
--   for most windows of a field archive;
-- * `file_summaries.species` is the species detected in the most windows of
--   the recording, or NULL when none was ("no detection"); `detected` lists
--   every species detected with its window count and highest score, and
--   `top_k` keeps the highest mean scores, detected or not.
--
-- Results written before this migration came from models without thresholds;
-- they are carried over at the default threshold 0.5, the one such models
-- still detect with.

ALTER TABLE detections RENAME TO window_scores;
ALTER INDEX detections_species_confidence RENAME TO window_scores_species_confidence;
ALTER INDEX detections_pkey RENAME TO window_scores_pkey;
ALTER SEQUENCE detections_id_seq RENAME TO window_scores_id_seq;
ALTER TABLE window_scores RENAME CONSTRAINT detections_file_sha256_model_version_window_index_key
    TO window_scores_file_sha256_model_version_window_index_key;
COMMENT ON TABLE window_scores IS
    'Every analysed window''s best-scoring species, its score and the top-k scores, detected or not.';

CREATE TABLE detections (
    id              bigserial PRIMARY KEY,
    file_sha256     text NOT NULL REFERENCES audio_files (sha256) ON DELETE CASCADE,
    model_version   text NOT NULL REFERENCES model_versions (version),
    window_index    integer NOT NULL CHECK (window_index >= 0),
    start_s         double precision NOT NULL,
    end_s           double precision NOT NULL CHECK (end_s > start_s),
    species         text NOT NULL,
    confidence      real NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    threshold       real NOT NULL CHECK (threshold BETWEEN 0 AND 1),
    top_k           jsonb NOT NULL,           -- the window's top-k scores, for context
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (file_sha256, model_version, window_index, species)
);
CREATE INDEX detections_species_confidence ON detections (species, confidence DESC);
COMMENT ON TABLE detections IS
    'One row per window and species whose score reached the species'' threshold; no row = no detection.';

INSERT INTO detections (file_sha256, model_version, window_index, start_s, end_s, species,
                        confidence, threshold, top_k, created_at)
SELECT file_sha256, model_version, window_index, start_s, end_s, species, confidence, 0.5, top_k,
       created_at
FROM window_scores
WHERE confidence >= 0.5;

ALTER TABLE file_summaries ALTER COLUMN species DROP NOT NULL;
ALTER TABLE file_summaries ALTER COLUMN confidence DROP NOT NULL;
ALTER TABLE file_summaries ADD COLUMN detected jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(detected) = 'array');
ALTER TABLE file_summaries ADD CONSTRAINT file_summaries_species_has_confidence
    CHECK ((species IS NULL) = (confidence IS NULL));

UPDATE file_summaries s
SET detected = coalesce(d.detected, '[]'),
    species = d.first_species,
    confidence = d.first_confidence
FROM (
    SELECT f.file_sha256, f.model_version,
           jsonb_agg(jsonb_build_object('species', g.species, 'windows', g.windows,
                                        'max_score', g.max_score)
                     ORDER BY g.windows DESC, g.max_score DESC) AS detected,
           (array_agg(g.species ORDER BY g.windows DESC, g.max_score DESC))[1] AS first_species,
           (array_agg(g.max_score ORDER BY g.windows DESC, g.max_score DESC))[1] AS first_confidence
    FROM file_summaries f
    LEFT JOIN (
        SELECT file_sha256, model_version, species, count(*) AS windows,
               max(confidence) AS max_score
        FROM detections GROUP BY file_sha256, model_version, species
    ) g ON g.file_sha256 = f.file_sha256 AND g.model_version = f.model_version
    WHERE g.species IS NOT NULL
    GROUP BY f.file_sha256, f.model_version
) d
WHERE d.file_sha256 = s.file_sha256 AND d.model_version = s.model_version;
UPDATE file_summaries s SET species = NULL, confidence = NULL
WHERE s.detected = '[]';

-- Detections only (the view's columns are unchanged; its rows are now the
-- scores above threshold).
DROP VIEW job_detections;
CREATE VIEW job_detections AS
SELECT t.job_id, t.source_path, d.file_sha256, f.site, f.recorded_at,
       d.window_index, d.start_s, d.end_s, d.species, d.confidence, d.top_k,
       d.model_version, d.threshold
FROM tasks t
JOIN detections d ON d.file_sha256 = t.file_sha256 AND d.model_version = t.model_version
JOIN audio_files f ON f.sha256 = t.file_sha256;

-- Every window of every job, detected or not, with what was detected in it
-- (an empty array: no detection).
CREATE VIEW job_window_scores AS
SELECT t.job_id, t.source_path, w.file_sha256, f.site, f.recorded_at,
       w.window_index, w.start_s, w.end_s, w.species AS top_species,
       w.confidence AS top_score, w.top_k, w.model_version,
       coalesce((SELECT jsonb_agg(jsonb_build_object('species', d.species,
                                                     'confidence', d.confidence)
                                  ORDER BY d.confidence DESC)
                 FROM detections d
                 WHERE d.file_sha256 = w.file_sha256 AND d.model_version = w.model_version
                   AND d.window_index = w.window_index), '[]') AS detected
FROM tasks t
JOIN window_scores w ON w.file_sha256 = t.file_sha256 AND w.model_version = t.model_version
JOIN audio_files f ON f.sha256 = t.file_sha256;

CREATE OR REPLACE VIEW latest_file_results AS
SELECT DISTINCT ON (s.file_sha256)
       s.file_sha256, f.original_name, f.duration_s, f.site, f.recorded_at,
       s.species, s.confidence, s.top_k, s.windows, s.model_version, s.created_at,
       s.detected
FROM file_summaries s
JOIN audio_files f ON f.sha256 = s.file_sha256
ORDER BY s.file_sha256, s.created_at DESC;

CREATE OR REPLACE VIEW job_file_results AS
SELECT t.job_id, t.id AS task_id, t.source_path, t.file_sha256, t.status,
       t.error, s.species, s.confidence, s.top_k, s.windows, t.model_version,
       f.duration_s, f.site, f.recorded_at, s.detected
FROM tasks t
JOIN audio_files f ON f.sha256 = t.file_sha256
LEFT JOIN file_summaries s ON s.file_sha256 = t.file_sha256 AND s.model_version = t.model_version;
