#!/bin/sh
# One-shot: create the stack's buckets if they are missing (safe to run again).
# Runs in the seaweedfs container's network namespace (compose: network_mode service:seaweedfs),
# since the master listens on that container's loopback only.
#   SEAWEEDFS_MASTER   master address (default 127.0.0.1:9333)
#   S3_BUCKETS         space-separated S3 buckets (artifacts, the JDBC catalog's warehouse)
#   S3_TABLE_BUCKETS   space-separated table buckets (one per Iceberg REST catalog warehouse)
set -eu
master="${SEAWEEDFS_MASTER:-127.0.0.1:9333}"
weed="${WEED:-weed}"

run() { printf '%s\n' "$1" | "$weed" shell -master="$master" 2>&1; }

# Table buckets first: SeaweedFS lists them among the S3 buckets too.
for bucket in ${S3_TABLE_BUCKETS:-}; do
    if run "s3tables.bucket -get -name $bucket -account admin" | grep -q "^Name: $bucket\$"; then
        echo "table bucket $bucket exists"
    elif run "s3tables.bucket -create -name $bucket -account admin" | grep -q ":bucket/$bucket\$"; then
        echo "created table bucket $bucket"
    else
        echo "could not create table bucket $bucket" >&2
        exit 1
    fi
done

listing="$(run 's3.bucket.list' || true)"
for bucket in ${S3_BUCKETS:-}; do
    if printf '%s\n' "$listing" | grep -q "^  $bucket	"; then
        echo "bucket $bucket exists"
    elif run "s3.bucket.create -name $bucket" | grep -q "^created bucket $bucket\$"; then
        echo "created bucket $bucket"
    else
        echo "could not create bucket $bucket" >&2
        exit 1
    fi
done
