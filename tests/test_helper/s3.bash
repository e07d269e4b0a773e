# S3 test helpers (load after test_helper/common): unique prefixes, the fault
# proxy, a raw signed curl, and the point-in-time fixture chain.

# The S3 tests never skip: without a server (scripts/with-s3) they fail.
require_s3() {
  s3_available || { echo "no S3 server: run the tests under scripts/with-s3" >&2; return 1; }
}

# s3_url NAME: a fresh s3:// prefix in the test bucket for this test.
s3_url() {
  echo "s3://$WALSYNC_TEST_BUCKET/t$$-${BATS_TEST_NUMBER}-$RANDOM/$1"
}

# backends NAME: a fresh file:// and s3:// URL, one a line.
backends() {
  echo "file://$T/$1"
  echo "$(s3_url "$1")"
}

s3_port() { local p=${AWS_ENDPOINT_URL_S3##*:}; echo "${p%%/*}"; }

# s3curl METHOD PATH [curl args]: a request signed by curl's own SigV4 (the
# access key's ':' percent-encoded in the userinfo). Prints the body.
s3curl() {
  local m=$1 p=$2; shift 2
  local ak sk
  ak=$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' "$AWS_ACCESS_KEY_ID")
  sk=$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' "$AWS_SECRET_ACCESS_KEY")
  curl -s -X "$m" --aws-sigv4 "aws:amz:$AWS_REGION:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    "$@" "http://$ak:$sk@127.0.0.1:$(s3_port)$p"
}

# start_proxy [fault-proxy args]: PROXY (endpoint URL), PROXY_LOG, PROXY_PID.
start_proxy() {
  PROXY_LOG="$T/proxy.log"
  rm -f "$T/proxy.port"
  python3 "$REPO_ROOT/tests/fault-proxy.py" --upstream "$(s3_port)" --port-file "$T/proxy.port" \
    --log "$PROXY_LOG" --lifetime 120 "$@" 3>&- &
  PROXY_PID=$!
  local i
  for i in $(seq 1 100); do [ -s "$T/proxy.port" ] && break; sleep 0.05; done
  [ -s "$T/proxy.port" ] || { echo "fault proxy did not start" >&2; return 1; }
  PROXY="http://127.0.0.1:$(cat "$T/proxy.port")"
}

stop_proxy() {
  if [ -n "${PROXY_PID:-}" ]; then
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=
  fi
}

# proxy_count PATTERN: requests in the proxy log matching an extended regex.
proxy_count() { grep -cE "$1" "$PROXY_LOG" || true; }

hex16() { printf '%016x' "$1"; }
# ts N: the fixture's timestamp of TXID N (2024-01-01T00:00:00Z + N s).
ts() { date -u -d "@$((1704067200 + $1))" +%Y-%m-%dT%H:%M:%SZ; }

# build_chain DIR: a point-in-time fixture made with the project's tools.
#   DIR/db.N      the database after TXID N (N = 1..100)
#   DIR/l0/*.ltx  TXID 1 (snapshot) and 2..100, one transaction each
#   DIR/l1/*.ltx  compactions 2-10, 11-20, ..., 91-100
#   DIR/l9/*.ltx  a snapshot at TXID 50
# Each file's LTX timestamp is ts(N) of its last TXID.
build_chain() {
  local d=$1 i
  mkdir -p "$d/l0" "$d/l1" "$d/l9" "$d/wal"
  (cd "$d" && python3 - <<'PY'
import sqlite3, shutil
db = sqlite3.connect("work.db", isolation_level=None)
db.execute("PRAGMA page_size=1024")
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)")
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
shutil.copy("work.db", "db.1")
for i in range(2, 101):
    db.execute("BEGIN")
    db.execute("INSERT INTO t(v) VALUES(randomblob(?))", (200 + (i * 37) % 1500,))
    if i % 3 == 0:
        db.execute("UPDATE t SET v = randomblob(50) WHERE k = ?", (i // 3,))
    if i % 10 == 0:
        db.execute("DELETE FROM t WHERE k = ?", (i // 5,))
    db.execute("COMMIT")
    shutil.copy("work.db-wal", "wal/%d" % i)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy("work.db", "db.%d" % i)
PY
  ) || return 1
  ltx-encode --db "$d/db.1" -s "$d/state" --txid 1 --timestamp "$(ts 1)" \
    > "$d/l0/$(hex16 1)-$(hex16 1).ltx" || return 1
  for i in $(seq 2 100); do
    ltx-encode -s "$d/state" --timestamp "$(ts "$i")" < "$d/wal/$i" \
      > "$d/l0/$(hex16 "$i")-$(hex16 "$i").ltx" || return 1
  done
  local lo hi files
  for lo in 2 $(seq 11 10 91); do
    hi=$(( lo == 2 ? 10 : lo + 9 ))
    files=()
    for i in $(seq "$lo" "$hi"); do files+=("$d/l0/$(hex16 "$i")-$(hex16 "$i").ltx"); done
    ltx-merge -o "$d/l1/$(hex16 "$lo")-$(hex16 "$hi").ltx" "${files[@]}" || return 1
  done
  ltx-encode --db "$d/db.50" --txid 32 --timestamp "$(ts 50)" > "$d/l9/$(hex16 1)-$(hex16 50).ltx"
}

# build_compactor: nothing to build any more - build_chain compacts with the
# real ltx-merge(1). Kept so that setup_file functions calling it still work.
build_compactor() { :; }

# upload_chain DIR URL: level 0, level 1 and level 9 of build_chain's fixture.
upload_chain() {
  cat "$1"/l0/*.ltx | s3-put --sync-interval 0 "$2" &&
    cat "$1"/l1/*.ltx | s3-put --level 1 "$2" &&
    cat "$1"/l9/*.ltx | s3-put --level 9 "$2"
}
