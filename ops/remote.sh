#!/usr/bin/env bash
# The project's default DVC remote, written to .dvc/config (commit it: clones share it).
#   ops/remote.sh s3://bucket/path [endpoint URL]   S3, or an S3-compatible store at the endpoint (dvc-s3)
#   ops/remote.sh /a/shared/folder                  a folder: a mounted share, or a disk for one person
# Credentials stay out of the config: dvc-s3 reads them as boto3 does (AWS_* variables, ~/.aws).
set -euo pipefail
url=${1:-}
endpoint=${2:-}
name=${REMOTE_NAME:-storage}
if [ -z "$url" ]; then
    echo "usage: make remote URL=<s3://bucket/path | /a/folder> [ENDPOINT=<S3-compatible endpoint URL>]" >&2
    exit 2
fi
dvc remote add --force --default "$name" "$url"
if [ -n "$endpoint" ]; then
    dvc remote modify "$name" endpointurl "$endpoint"
else
    dvc remote modify --unset "$name" endpointurl 2>/dev/null || true
fi
echo "DVC remote '$name' (the default): $url${endpoint:+ at $endpoint}"
echo "commit .dvc/config, then: dvc push; in a fresh clone: dvc pull"
