#!/usr/bin/env bash
# Chaos test of the backup pipeline (issue 5):
#   chaos.sh URL SECONDS WORKDIR [S3_RESTART_CMD]
# A writer commits for SECONDS while a loop kills a random stage (wal-tail,
# ltx-encode, s3-put) or the whole pipeline with SIGKILL and restarts it the
# documented way (s3-put --sync-ack, then the pipeline with --ack). With
# S3_RESTART_CMD (e.g. "scripts/s3-server stop; sleep 5; scripts/s3-server start")
# the S3 server is taken away once. At the end: every counter the writer saw
# committed is in the restore, the restore equals the source byte for byte,
# s3-verify is clean; prints bytes uploaded for recovery vs database size.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
url=$1 seconds=$2 work=$3 s3_restart=${4:-}
mkdir -p "$work" && cd "$work" || exit 1
rm -rf ./* 2>/dev/null
say() { printf 'chaos: %s\n' "$*"; }
start() {
  setsid bash -c 'wal-tail -v --ack ack app.db | ltx-encode --state st --ack ack | s3-put -v --ack ack "$1"' _ "$url" \
    > /dev/null 2>> pipeline.log &
  PIPE=$!
}
sync_and_start() {
  for _ in $(seq 1 50); do s3-put --sync-ack --ack ack "$url" 2>> pipeline.log && break; sleep 0.2; done
  start
}
sqlite3 app.db "pragma journal_mode=wal" > /dev/null
python3 "$here/tools/chaos-writer.py" app.db "$seconds" committed &
writer=$!
sync_and_start
kills=0 s3_outage=0
t_end=$((SECONDS + seconds))
while [ $SECONDS -lt $t_end ]; do
  sleep "0.$((RANDOM % 9 + 1))"
  if ! kill -0 "$PIPE" 2>/dev/null; then sync_and_start; continue; fi
  case $((RANDOM % 5)) in
    0) victim="wal-tail" ;; 1) victim="ltx-encode" ;; 2) victim="s3-put" ;; 3) victim="all" ;; *) continue ;;
  esac
  if [ "$victim" = all ]; then kill -9 -- "-$PIPE" 2>/dev/null
  else pkill -9 -s "$PIPE" -x "$victim" 2>/dev/null; fi
  kills=$((kills + 1))
  sleep 0.1; kill -9 -- "-$PIPE" 2>/dev/null; wait "$PIPE" 2>/dev/null
  if [ -n "$s3_restart" ] && [ "$s3_outage" -eq 0 ] && [ $SECONDS -gt $((t_end - seconds / 2)) ]; then
    say "taking S3 away"; bash -c "$s3_restart" > /dev/null 2>&1; s3_outage=1
  fi
  sync_and_start
done
wait "$writer"
last=$(cat committed)
say "writer done at counter $last; $kills kills"
# let the pipeline catch up: the ack reaches the source's last commit
want=$(sqlite3 app.db "select count(*) from counter")
for _ in $(seq 1 300); do
  kill -0 "$PIPE" 2>/dev/null || sync_and_start
  rm -f probe.db probe.db-wal probe.db-shm; s3-get "$url" 2>/dev/null | ltx-apply probe.db 2>/dev/null
  [ -s probe.db ] && [ "$(sqlite3 probe.db 'select max(n) from counter' 2>/dev/null)" = "$last" ] && break
  sleep 0.2
done
kill -- "-$PIPE" 2>/dev/null; wait "$PIPE" 2>/dev/null
rm -f restored.db; s3-get "$url" | ltx-apply restored.db || { say "restore failed"; exit 1; }
got=$(sqlite3 restored.db "select max(n) from counter")
missing=$(sqlite3 restored.db "select $last - count(*) from counter where n <= $last")
sqlite3 app.db "pragma wal_checkpoint(truncate)" > /dev/null
src=$(sqlite3 app.db .sha3sum) dst=$(sqlite3 restored.db .sha3sum)
uploaded=$(grep -o 'stored ([0-9]* bytes)' pipeline.log | grep -o '[0-9]*' | awk '{s += $1} END {print s + 0}')
resyncs=$(grep -c '^wal-tail: resync:' pipeline.log || true)
say "last committed $last, restored max $got, missing $missing, integrity $(sqlite3 restored.db 'pragma integrity_check')"
say "bytes uploaded ${uploaded:-0} for a $(stat -c %s app.db)-byte database; $kills kills, $resyncs resync lines"
s3-verify "$url" > verify.out 2>&1; vrc=$?
say "s3-verify exit $vrc: $(tail -n 1 verify.out)"
[ "$got" = "$last" ] && [ "$missing" = 0 ] && [ "$src" = "$dst" ] && cmp -s app.db restored.db && [ "$vrc" = 0 ] &&
  [ "$(sqlite3 restored.db 'pragma integrity_check')" = ok ] && { say "ok"; exit 0; }
say "FAILED (src $src, restored $dst)"; exit 1
