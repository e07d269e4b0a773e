#!/bin/bash
# wal-tail torture: a writer runs mixed transactions and random checkpoints
# while `wal-tail DB | ltx-encode --state DIR >> out.ltx` is killed (-9) and
# restarted; the applied stream must equal the source byte for byte.
#
# usage: wal-tail-torture.sh WORKDIR NTXNS KILLS [SEED]
# Prints measurements as "key value" lines; exit 0 when the restore matches.
set -euo pipefail
W=$1 N=$2 KILLS=$3 SEED=${4:-$RANDOM}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$W" && cd "$W"
rm -rf src.db* base.db* st out.ltx restored.db* lat-* walsize
echo "seed $SEED"

pct() {  # pct FILE P -> milliseconds
  sort -g "$1" | awk -v p="$2" '{a[NR]=$1} END {i=int(NR*p/100); if (i<1) i=1; printf "%.2f", a[i]*1000}'
}

# Baseline: the same writer without wal-tail.
python3 "$HERE/wal-tail-writer.py" base.db "$N" "$SEED" lat-base
echo "writer_alone_p99_ms $(pct lat-base 99) max_ms $(pct lat-base 100)"

python3 - <<'PY'
import sqlite3
c = sqlite3.connect("src.db"); c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE seed(x)"); c.execute("INSERT INTO seed VALUES(1)"); c.commit()
PY

pipe_pid=
start_pipe() {
  ( wal-tail -v src.db 2>>wal-tail.err | ltx-encode --state st >> out.ltx 2>>ltx-encode.err ) &
  pipe_pid=$!
}
stop_pipe() {  # $1: signal for wal-tail
  local wt
  wt=$(pgrep -P "$pipe_pid" -x wal-tail || true)
  [ -z "$wt" ] || kill "-$1" "$wt" 2>/dev/null || true
  wait "$pipe_pid" 2>/dev/null || true
}

( while :; do stat -c %s src.db-wal 2>/dev/null || echo 0; sleep 0.05; done ) > walsize &
mon=$!
start_pipe
python3 "$HERE/wal-tail-writer.py" src.db "$N" "$SEED" lat-src &
writer=$!
kills=0
while [ "$kills" -lt "$KILLS" ] && kill -0 "$writer" 2>/dev/null; do
  sleep "0.$((RANDOM % 5))$((RANDOM % 9 + 1))"
  kill -0 "$writer" 2>/dev/null || break
  stop_pipe KILL
  kills=$((kills + 1))
  sleep "0.0$((RANDOM % 9))"
  start_pipe
done
echo "kills $kills"
wait "$writer"
sleep 1                    # let the last commits through
stop_pipe TERM
kill "$mon"; wait "$mon" 2>/dev/null || true
echo "writer_tailed_p99_ms $(pct lat-src 99) max_ms $(pct lat-src 100)"
echo "wal_max_bytes $(sort -n walsize | tail -1)"
echo "ltx_bytes $(stat -c %s out.ltx)"
echo "resyncs $(grep -c 'resync:' wal-tail.err || true) restarts_followed $(grep -c 'WAL restarted' wal-tail.err || true) checkpoint_waits_let_through $(grep -c 'stepping aside' wal-tail.err || true)"

ltx-apply restored.db < out.ltx
python3 -c 'import sqlite3; sqlite3.connect("src.db").execute("PRAGMA wal_checkpoint(TRUNCATE)")'
[ "$(sqlite3 restored.db 'PRAGMA integrity_check')" = ok ]
cmp src.db restored.db
echo "restore identical"
