#!/bin/bash
# vfs-query.sh URL [SQL...] - query a replica where it lies, without
# restoring it, through the walsync VFS (man/walsync_vfs.7): only the pages
# the statements touch are read. With no SQL, an interactive sqlite3 shell.
#
#   examples/vfs-query.sh s3://bucket/prod/app 'SELECT count(*) FROM t'
#   VFS_PARAMS='timestamp=2026-12-01T08:00:00Z' examples/vfs-query.sh file:///backups/app
#
# WALSYNC_VFS: the extension (default walsync_vfs, where dlopen(3) looks).
# VFS_PARAMS: more URI parameters, e.g. txid=2a&cachesize=64M&verify=file.
# S3 settings and keys come from the environment, as for every walsync tool.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: vfs-query.sh URL [SQL...]" >&2; exit 2; }
url=$1
shift
so=${WALSYNC_VFS:-walsync_vfs}
uri="file:replica.db?vfs=walsync&replica=$url${VFS_PARAMS:+&$VFS_PARAMS}"
exec sqlite3 -bail -cmd ".load $so" -cmd ".open $uri" :memory: "$@"
