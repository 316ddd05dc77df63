-- When, where and on what a recording was made.
--
-- Until now `recorded_at` came only from recorder file names, read as UTC.
-- WAV headers say more: GUANO (Song Meters and most bat detectors) gives the
-- start with its UTC offset, the position and the recorder's make, model and
-- serial; AudioMoth's comment gives the start, its zone and the serial. An
-- ingest can also name the time zone its recorders kept (for file names,
-- which carry none). The columns:
--
-- * `recorded_at_source`: where `recorded_at` came from: 'guano' or
--   'audiomoth' (the header), or 'file_name'. A header beats a name, and a
--   name read in a known zone beats one read as UTC, so registering the same
--   bytes again with better information improves the row; otherwise the first
--   value is kept;
-- * `utc_offset_minutes`: the offset of the recorder's clock (local time =
--   recorded_at + offset); NULL when unknown, i.e. a file name read as UTC;
-- * `latitude`, `longitude`: WGS84 degrees, from GUANO's `Loc Position`;
-- * `device`: make and model ('Wildlife Acoustics, Inc. Song Meter Mini',
--   'AudioMoth'); `device_serial`: the recorder's serial;
-- * `header_metadata`: every field read from the header, for what has no
--   column (GUANO's fields by key, the INFO chunk's ICMT, IART …).

ALTER TABLE audio_files
    ADD COLUMN recorded_at_source text
        CHECK (recorded_at_source IN ('guano', 'audiomoth', 'file_name')),
    ADD COLUMN utc_offset_minutes integer
        CHECK (utc_offset_minutes BETWEEN -1080 AND 1080),
    ADD COLUMN latitude double precision CHECK (latitude BETWEEN -90 AND 90),
    ADD COLUMN longitude double precision CHECK (longitude BETWEEN -180 AND 180),
    ADD COLUMN device text,
    ADD COLUMN device_serial text,
    ADD COLUMN header_metadata jsonb CHECK (jsonb_typeof(header_metadata) = 'object'),
    ADD CONSTRAINT audio_files_position_complete CHECK ((latitude IS NULL) = (longitude IS NULL));

UPDATE audio_files SET recorded_at_source = 'file_name' WHERE recorded_at IS NOT NULL;

-- How much a start time is worth, to decide whether a new one replaces it.
CREATE FUNCTION recording_time_rank(source text, utc_offset_minutes integer)
RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN source IN ('guano', 'audiomoth') THEN 3
        WHEN source = 'file_name' AND utc_offset_minutes IS NOT NULL THEN 2
        WHEN source IS NOT NULL THEN 1
        ELSE 0
    END
$$;

-- Absolute times: a detection starts at recorded_at + start_s (NULL when the
-- recording's start is unknown); `start_local` is that instant on the
-- recorder's clock (UTC when its offset is unknown), for "by hour of day".
-- New columns go last so that the existing ones keep their positions.
CREATE OR REPLACE VIEW job_detections AS
SELECT t.job_id, t.source_path, d.file_sha256, f.site, f.recorded_at,
       d.window_index, d.start_s, d.end_s, d.species, d.confidence, d.top_k,
       d.model_version, d.threshold,
       f.recorded_at + d.start_s * interval '1 second' AS start_at,
       f.recorded_at + d.end_s * interval '1 second' AS end_at,
       (f.recorded_at + d.start_s * interval '1 second'
            + coalesce(f.utc_offset_minutes, 0) * interval '1 minute') AT TIME ZONE 'UTC'
           AS start_local,
       f.utc_offset_minutes, f.latitude, f.longitude, f.device, f.device_serial
FROM tasks t
JOIN detections d ON d.file_sha256 = t.file_sha256 AND d.model_version = t.model_version
JOIN audio_files f ON f.sha256 = t.file_sha256;

CREATE OR REPLACE VIEW job_window_scores AS
SELECT t.job_id, t.source_path, w.file_sha256, f.site, f.recorded_at,
       w.window_index, w.start_s, w.end_s, w.species AS top_species,
       w.confidence AS top_score, w.top_k, w.model_version,
       coalesce((SELECT jsonb_agg(jsonb_build_object('species', d.species,
                                                     'confidence', d.confidence)
                                  ORDER BY d.confidence DESC)
                 FROM detections d
                 WHERE d.file_sha256 = w.file_sha256 AND d.model_version = w.model_version
                   AND d.window_index = w.window_index), '[]') AS detected,
       f.recorded_at + w.start_s * interval '1 second' AS start_at,
       f.recorded_at + w.end_s * interval '1 second' AS end_at,
       (f.recorded_at + w.start_s * interval '1 second'
            + coalesce(f.utc_offset_minutes, 0) * interval '1 minute') AT TIME ZONE 'UTC'
           AS start_local,
       f.utc_offset_minutes, f.latitude, f.longitude, f.device, f.device_serial
FROM tasks t
JOIN window_scores w ON w.file_sha256 = t.file_sha256 AND w.model_version = t.model_version
JOIN audio_files f ON f.sha256 = t.file_sha256;

CREATE OR REPLACE VIEW latest_file_results AS
SELECT DISTINCT ON (s.file_sha256)
       s.file_sha256, f.original_name, f.duration_s, f.site, f.recorded_at,
       s.species, s.confidence, s.top_k, s.windows, s.model_version, s.created_at,
       s.detected,
       f.utc_offset_minutes, f.latitude, f.longitude, f.device, f.device_serial
FROM file_summaries s
JOIN audio_files f ON f.sha256 = s.file_sha256
ORDER BY s.file_sha256, s.created_at DESC;

CREATE OR REPLACE VIEW job_file_results AS
SELECT t.job_id, t.id AS task_id, t.source_path, t.file_sha256, t.status,
       t.error, s.species, s.confidence, s.top_k, s.windows, t.model_version,
       f.duration_s, f.site, f.recorded_at, s.detected,
       f.utc_offset_minutes, f.latitude, f.longitude, f.device, f.device_serial
FROM tasks t
JOIN audio_files f ON f.sha256 = t.file_sha256
LEFT JOIN file_summaries s ON s.file_sha256 = t.file_sha256 AND s.model_version = t.model_version;
