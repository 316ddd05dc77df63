-- Model artifacts are verified on every load: the weights against
-- `checksum`, the metadata (labels, thresholds, scaler) against this.
-- Versions published before it existed keep NULL and are checked against
-- the weights digest their metadata names.
ALTER TABLE model_versions ADD COLUMN meta_sha256 text
    CHECK (meta_sha256 IS NULL OR meta_sha256 ~ '^[0-9a-f]{64}$');
