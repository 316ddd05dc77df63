-- What a job reports, chosen at submission: only the species on its list
-- (like BirdNET-Analyzer's --slist) and only detections at or above its
-- minimum confidence. Models, scores and stored detections are shared by
-- every job that holds a recording, so the filter is applied where a job's
-- results are read: the job views below (and so the API, exports and
-- stats). NULL means no restriction.

ALTER TABLE jobs
    ADD COLUMN species_list text[] CHECK (cardinality(species_list) > 0),
    ADD COLUMN min_confidence real CHECK (min_confidence BETWEEN 0 AND 1);

-- Whether the job reports `species` at `confidence`.
CREATE FUNCTION job_reports(job_species text[], job_min real, species text, confidence real)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT (job_species IS NULL OR species = ANY(job_species))
       AND (job_min IS NULL OR confidence >= job_min)
$$;

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
JOIN jobs j ON j.id = t.job_id
JOIN detections d ON d.file_sha256 = t.file_sha256 AND d.model_version = t.model_version
JOIN audio_files f ON f.sha256 = t.file_sha256
WHERE job_reports(j.species_list, j.min_confidence, d.species, d.confidence);

CREATE OR REPLACE VIEW job_window_scores AS
SELECT t.job_id, t.source_path, w.file_sha256, f.site, f.recorded_at,
       w.window_index, w.start_s, w.end_s, w.species AS top_species,
       w.confidence AS top_score, w.top_k, w.model_version,
       coalesce((SELECT jsonb_agg(jsonb_build_object('species', d.species,
                                                     'confidence', d.confidence)
                                  ORDER BY d.confidence DESC)
                 FROM detections d
                 WHERE d.file_sha256 = w.file_sha256 AND d.model_version = w.model_version
                   AND d.window_index = w.window_index
                   AND job_reports(j.species_list, j.min_confidence, d.species, d.confidence)),
                '[]') AS detected,
       f.recorded_at + w.start_s * interval '1 second' AS start_at,
       f.recorded_at + w.end_s * interval '1 second' AS end_at,
       (f.recorded_at + w.start_s * interval '1 second'
            + coalesce(f.utc_offset_minutes, 0) * interval '1 minute') AT TIME ZONE 'UTC'
           AS start_local,
       f.utc_offset_minutes, f.latitude, f.longitude, f.device, f.device_serial
FROM tasks t
JOIN jobs j ON j.id = t.job_id
JOIN window_scores w ON w.file_sha256 = t.file_sha256 AND w.model_version = t.model_version
JOIN audio_files f ON f.sha256 = t.file_sha256;

-- A recording's call within a job: without a filter, the stored summary;
-- with one, the same rule (most windows, then highest score) over the
-- detections the job reports. `detected` stays NULL until classified.
CREATE OR REPLACE VIEW job_file_results AS
SELECT t.job_id, t.id AS task_id, t.source_path, t.file_sha256, t.status,
       t.error,
       CASE WHEN j.species_list IS NULL AND j.min_confidence IS NULL THEN s.species
            ELSE c.detected -> 0 ->> 'species' END AS species,
       CASE WHEN j.species_list IS NULL AND j.min_confidence IS NULL THEN s.confidence
            ELSE (c.detected -> 0 ->> 'max_score')::real END AS confidence,
       s.top_k, s.windows, t.model_version,
       f.duration_s, f.site, f.recorded_at,
       CASE WHEN j.species_list IS NULL AND j.min_confidence IS NULL THEN s.detected
            WHEN s.file_sha256 IS NULL THEN NULL
            ELSE c.detected END AS detected,
       f.utc_offset_minutes, f.latitude, f.longitude, f.device, f.device_serial
FROM tasks t
JOIN jobs j ON j.id = t.job_id
JOIN audio_files f ON f.sha256 = t.file_sha256
LEFT JOIN file_summaries s ON s.file_sha256 = t.file_sha256 AND s.model_version = t.model_version
LEFT JOIN LATERAL (
    SELECT coalesce(jsonb_agg(jsonb_build_object('species', x.species, 'windows', x.windows,
                                                 'max_score', x.max_score)
                              ORDER BY x.windows DESC, x.max_score DESC, x.species), '[]')
               AS detected
    FROM (SELECT d.species, count(*) AS windows, max(d.confidence) AS max_score
          FROM detections d
          WHERE d.file_sha256 = t.file_sha256 AND d.model_version = t.model_version
            AND job_reports(j.species_list, j.min_confidence, d.species, d.confidence)
          GROUP BY d.species) x
    WHERE j.species_list IS NOT NULL OR j.min_confidence IS NOT NULL
) c ON true;
