#!/usr/bin/env bash
# The main job with the plumbing tools, on a file:// replica:
#   back up a live database continuously, write to it, restore it, prove equality.
# Usage: examples/pipeline-demo.sh [WORKDIR]     (tools from build/bin, else PATH)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${WALSYNC_BIN:-}" ] && export PATH="$WALSYNC_BIN:$PATH"
[ -x "$here/build/bin/wal-tail" ] && [ -z "${WALSYNC_BIN:-}" ] && export PATH="$here/build/bin:$PATH"
work=${1:-$(mktemp -d /tmp/walsync-demo.XXXXXX)}
mkdir -p "$work"
cd "$work"
rm -rf app.db app.db-wal app.db-shm state replica restored.db
say() { printf '==> %s\n' "$*"; }

say "create app.db (WAL mode) in $work"
sqlite3 app.db "pragma journal_mode=wal; create table notes(id integer primary key, body text, at text);
  insert into notes(body, at) values ('first note', datetime('now'));" > /dev/null

say "start the backup pipeline: wal-tail app.db | ltx-encode --state state | s3-put file://$work/replica"
# its own process group, so that stopping it stops every stage
setsid bash -c 'wal-tail app.db | ltx-encode --state state | s3-put "$1"' _ "file://$work/replica" \
  > /dev/null 2> pipeline.log &
pipeline=$!
trap 'kill -- -$pipeline 2>/dev/null || true' EXIT

say "write to the live database: 200 transactions, an update, a delete"
for i in $(seq 1 200); do
  sqlite3 app.db "insert into notes(body, at) values ('note $i ' || hex(randomblob(64)), datetime('now'))"
done
sqlite3 app.db "update notes set body = upper(body) where id % 5 = 0; delete from notes where id % 17 = 0;"
want=$(sqlite3 app.db "select count(*) from notes")

say "wait until the replica holds the last commit"
for _ in $(seq 1 100); do
  rm -f probe.db
  s3-get "file://$work/replica" 2>/dev/null | ltx-apply probe.db 2>/dev/null || true
  [ -s probe.db ] && [ "$(sqlite3 probe.db 'select count(*) from notes' 2>/dev/null)" = "$want" ] && break
  sleep 0.1
done
kill -- "-$pipeline" 2>/dev/null || true
wait "$pipeline" 2>/dev/null || true
trap - EXIT

say "replica files:"
s3-ls "file://$work/replica" | tail -n 3

say "restore: s3-get file://$work/replica | ltx-apply restored.db"
s3-get "file://$work/replica" | ltx-apply restored.db

say "prove equality"
sqlite3 app.db "pragma wal_checkpoint(truncate)" > /dev/null
src=$(sqlite3 app.db .sha3sum) dst=$(sqlite3 restored.db .sha3sum)
echo "source   .sha3sum $src"
echo "restored .sha3sum $dst"
echo "rows: source $want, restored $(sqlite3 restored.db 'select count(*) from notes'), integrity $(sqlite3 restored.db 'pragma integrity_check')"
[ "$src" = "$dst" ] || { echo "MISMATCH" >&2; exit 1; }
cmp app.db restored.db && echo "byte-identical: app.db == restored.db"
say "ok"
