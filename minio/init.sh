#!/bin/sh
# Creates the birdsong bucket on MinIO (idempotent) and keeps it private.
# Run by the minio-init service of docker-compose.yml.
set -eu
until mc alias set local "$MINIO_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  echo "waiting for MinIO at $MINIO_ENDPOINT"
  sleep 1
done
mc mb --ignore-existing "local/$BUCKET"
mc anonymous set none "local/$BUCKET"
echo "bucket $BUCKET ready"
