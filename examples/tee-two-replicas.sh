#!/bin/bash
# tee-two-replicas.sh DB URL1 URL2 - one backup pipeline, two replicas.
#
# wal-tail and ltx-encode run once; tee(1) hands the same LTX stream to two
# s3-put processes, so both replicas hold byte-identical files (same TXIDs,
# same checksums). Stop it with SIGTERM to the process group; wal-tail writes
# out what is committed and the rest drain.
#
# There is no --ack here: one acknowledgement cannot speak for two
# destinations. After a crash, restart it with a fresh state (or run
# `walsync watch` once per replica, each with its own state directory).
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: tee-two-replicas.sh DB URL1 URL2" >&2; exit 2; }
db=$1 url1=$2 url2=$3
state=${STATE_DIR:-$db-tee-state}
wal-tail "$db" | ltx-encode --state "$state" | tee >(s3-put "$url1") | s3-put "$url2"
wait
