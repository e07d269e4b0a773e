#!/usr/bin/env bats
# age-encrypted replicas: the age format's test vectors, the reference `age`
# tool both ways, walsync watch/restore/compact on an encrypted replica,
# ranged reads across chunks, wrong keys, tampering and mixed replicas.
load test_helper/common
load test_helper/s3

setup() {
  require_s3
  GOLD="$WALSYNC_VECTORS/ltx/chain"
  age-keygen -o "$T/key.txt" 2>/dev/null
  RCPT=$(age-keygen -y "$T/key.txt")
  age-keygen -o "$T/other.txt" 2>/dev/null
}

# mkdb DB ROWS: a WAL-mode database with ROWS rows of ~1 KB.
mkdb() {
  python3 - "$1" "$2" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
c.execute("BEGIN")
for i in range(int(sys.argv[2])):
    c.execute("INSERT INTO t(v) VALUES(?)", ("%d %s" % (i, "x" * (1000 + i % 97)),))
c.execute("COMMIT")
PY
}

# gold_db DB: the database the golden chain builds, applied from plain files.
gold_db() { cat "$GOLD"/*.ltx | ltx-apply "$1"; }

# encrypted_replica: in $T, app.db (5 rows) backed up by walsync watch to
# file://$T/rep/app encrypted to key.txt, the watch stopped, then one more
# commit in app.db that the replica lacks.
encrypted_replica() {
  cd "$T"
  mkdb app.db 5
  walsync watch app.db -b "file://$T/rep" --age-identity key.txt 2>w.log & local pid=$! i
  for i in $(seq 1 300); do
    rm -f probe.db
    walsync restore app -b "file://$T/rep" -o probe.db --age-identity key.txt 2>/dev/null &&
      [ "$(sqlite3 probe.db .sha3sum)" = "$(sqlite3 app.db .sha3sum)" ] && break
    sleep 0.2
  done
  kill -TERM "$pid"; wait "$pid"
  [ "$(sqlite3 probe.db .sha3sum)" = "$(sqlite3 app.db .sha3sum)" ]
  rm -f probe.db
  sqlite3 app.db "INSERT INTO t(v) VALUES('after the watch')"
}

@test "age: every test vector of the age format (X25519, scrypt, STREAM, header, HMAC)" {
  run python3 "$REPO_ROOT/tests/tools/age-vectors.py" "$REPO_ROOT/tests/data/age" "$T/v"
  assert_success
  assert_output "92 vectors: 92 ok"
}

@test "age: objects s3-put encrypts open with the age tool, on file:// and S3" {
  for url in $(backends enc); do
    cat "$GOLD"/*.ltx | s3-put --sync-interval 0 --age-recipient "$RCPT" --age-identity "$T/key.txt" "$url"
    for f in "$GOLD"/*.ltx; do
      n=$(basename "$f")
      case $url in
        file://*) cp "${url#file://}/ltx/0/$n" "$T/obj" ;;
        s3://*) s3-get --raw "$url/0000/$n" > "$T/obj" ;;
      esac
      [ "$(head -c 21 "$T/obj")" = "age-encryption.org/v1" ]
      age -d -i "$T/key.txt" "$T/obj" > "$T/plain"
      cmp "$T/plain" "$f"
      age -d -i "$T/key.txt" "$T/obj" | ltx-verify -
    done
    s3-get --age-identity "$T/key.txt" "$url" | ltx-apply "$T/r.db"
    gold_db "$T/g.db"
    [ "$(ltx-checksum "$T/r.db")" = "$(ltx-checksum "$T/g.db")" ]
    rm -f "$T/r.db" "$T/g.db"
  done
}

@test "age: LTX files encrypted by the age tool and stored with s3-put --raw restore" {
  for f in "$GOLD"/*.ltx; do
    n=$(basename "$f")
    age -e -r "$RCPT" "$f" | s3-put --raw "file://$T/rep/ltx/0/$n"
  done
  s3-get --age-identity "$T/key.txt" "file://$T/rep" | ltx-apply "$T/r.db"
  gold_db "$T/g.db"
  [ "$(ltx-checksum "$T/r.db")" = "$(ltx-checksum "$T/g.db")" ]
  # a passphrase (scrypt) file from the age tool too
  printf 'correct horse\n' > "$T/pass"
  f="$GOLD/0000000000000001-0000000000000001.ltx"
  # age reads the passphrase from the terminal only: feed it through script(1)'s pty-less cousin
  python3 - "$f" "$T/p.age" <<'PY'
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp("age", ["age", "-p", "-o", sys.argv[2], sys.argv[1]])
out = b""
sent = 0
while True:
    try:
        b = os.read(fd, 1024)
    except OSError:
        break
    if not b:
        break
    out += b
    if out.count(b"passphrase") > sent:
        sent += 1
        os.write(fd, b"correct horse\n")
os.waitpid(pid, 0)
PY
  s3-get --raw --age-passphrase-file "$T/pass" "file://$T/p.age" | cmp - "$f"
}

@test "age: walsync watch, restore, compaction and snapshots on an encrypted replica" {
  cd "$T"
  mkdb app.db 50
  walsync watch app.db -b "file://$T/rep" --age-identity key.txt 2>w.log & pid=$!
  for i in $(seq 1 20); do
    sqlite3 app.db "INSERT INTO t(v) VALUES('w$i'); UPDATE t SET v = v || '.' WHERE id = $i;"
  done
  for i in $(seq 1 100); do grep -q "app: stored" w.log 2>/dev/null && break; sleep 0.1; done
  sleep 1
  kill -TERM "$pid"; wait "$pid"
  walsync restore app -b "file://$T/rep" -o r.db --age-identity key.txt
  [ "$(sqlite3 r.db 'PRAGMA integrity_check')" = ok ]
  [ "$(sqlite3 app.db .sha3sum)" = "$(sqlite3 r.db .sha3sum)" ]
  # compaction and a snapshot decrypt, merge and re-encrypt
  s3-compact --age-identity key.txt "file://$T/rep/app" -l 1 --now "$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
  [ -n "$(ls rep/app/ltx/1)" ]
  s3-compact --age-identity key.txt "file://$T/rep/app" -l 9 --interval 0
  [ -n "$(ls rep/app/ltx/9)" ]
  for o in rep/app/ltx/*/*.ltx; do
    [ "$(head -c 21 "$o")" = "age-encryption.org/v1" ]
    age -d -i key.txt "$o" | ltx-verify -
  done
  rm -rf rep/app/ltx/[0-8]  # the snapshot alone
  walsync restore app -b "file://$T/rep" -o r2.db --age-identity key.txt
  [ "$(sqlite3 app.db .sha3sum)" = "$(sqlite3 r2.db .sha3sum)" ]
  # no identity, or the wrong one: one line, exit 1, nothing restored
  run s3-get "file://$T/rep/app"
  [ "$status" -eq 1 ]
  [ "${#lines[@]}" -eq 1 ]
  assert_output --partial "an age-encrypted file: give --age-identity"
  run walsync restore app -b "file://$T/rep" -o r3.db
  [ "$status" -ne 0 ]
  assert_output --partial "give --age-identity"
  [ ! -e r3.db ]
  run s3-get --age-identity other.txt "file://$T/rep/app"
  [ "$status" -eq 1 ]
  assert_output --partial "no identity matches this file (wrong --age-identity?)"
  [ "${#lines[@]}" -eq 1 ]
}

@test "age: multi-MiB files: ranged reads across chunks in compaction, on file:// and S3" {
  mkdb "$T/big.db" 6000
  for url in $(backends big); do
    ltx-encode --db "$T/big.db" --txid 1 | s3-put --age-identity "$T/key.txt" "$url"
    gold="$T/gold-$RANDOM"
    ltx-encode --db "$T/big.db" --txid 1 > "$gold"
    s3-compact --age-identity "$T/key.txt" "$url" -l 9
    s3-get --age-identity "$T/key.txt" "$url" > "$T/out.ltx"
    ltx-apply "$T/r.db" "$T/out.ltx"
    [ "$(sqlite3 "$T/big.db" .sha3sum)" = "$(sqlite3 "$T/r.db" .sha3sum)" ]
    rm -f "$T/r.db"
  done
}

@test "age: tampering, truncation and a plain object in an encrypted replica: exit 3, one line" {
  cat "$GOLD"/*.ltx | s3-put --sync-interval 0 --age-identity "$T/key.txt" "file://$T/rep"
  o="$T/rep/ltx/0/0000000000000002-0000000000000002.ltx"
  cp "$o" "$T/orig"
  size=$(stat -c %s "$o")
  # a flipped payload byte
  printf '\x55' | dd of="$o" bs=1 seek=$((size - 20)) conv=notrunc 2>/dev/null
  run s3-get --age-identity "$T/key.txt" "file://$T/rep"
  [ "$status" -eq 3 ]
  assert_output --partial "fails authentication"
  # the header's MAC (a changed stanza is a key that does not match: exit 1)
  cp "$T/orig" "$o"
  at=$(grep -abo -- '--- ' "$o" | head -1 | cut -d: -f1)
  printf 'A' | dd of="$o" bs=1 seek=$((at + 5)) conv=notrunc 2>/dev/null
  printf 'B' | dd of="$o" bs=1 seek=$((at + 6)) conv=notrunc 2>/dev/null
  run s3-get --age-identity "$T/key.txt" "file://$T/rep"
  [ "$status" -eq 3 ]
  assert_output --partial "age header: MAC mismatch"
  # cut short
  cp "$T/orig" "$o"
  truncate -s $((size - 5)) "$o"
  run s3-get --age-identity "$T/key.txt" "file://$T/rep"
  [ "$status" -eq 3 ]
  [ "${#lines[@]}" -eq 1 ]
  # the plain LTX file in its place
  cp "$GOLD/0000000000000002-0000000000000002.ltx" "$o"
  run s3-get --age-identity "$T/key.txt" "file://$T/rep"
  [ "$status" -eq 3 ]
  assert_output --partial "not an age file: a plain LTX object in an encrypted replica"
  [ "${#lines[@]}" -eq 1 ]
}

@test "age: bad key files and flags: exit 2, one line, the key never printed" {
  key=$(grep AGE-SECRET "$T/key.txt")
  echo "${key%?}q" > "$T/bad.txt"
  run s3-get --age-identity "$T/bad.txt" "file://$T/rep"
  [ "$status" -eq 2 ]
  assert_output --partial "bad.txt: key 1: not an age X25519 identity"
  refute_output --partial "${key:20:20}"
  run s3-put --age-recipient "${RCPT}x" "file://$T/rep" < /dev/null
  [ "$status" -eq 2 ]
  assert_output --partial "--age-recipient: not an age X25519 recipient"
  run s3-get --age-identity "$T/missing.txt" "file://$T/rep"
  [ "$status" -eq 1 ]
  assert_output --partial "missing.txt: No such file or directory"
  printf 'pw\n' > "$T/pass"
  run s3-put --age-recipient "$RCPT" --age-passphrase-file "$T/pass" "file://$T/rep" < /dev/null
  [ "$status" -eq 2 ]
  assert_output --partial "a passphrase can't be combined with recipients"
}

@test "age: walsync watch without --age-identity on an encrypted replica says so: one line, exit 1, not retried" {
  encrypted_replica
  # with its state (the next file continues the remote chain), then without (a snapshot over it)
  for pass in state fresh; do
    [ "$pass" = fresh ] && rm -rf app.db-walsync
    run timeout 60 walsync watch app.db -b "file://$T/rep"
    [ "$status" -eq 1 ]
    assert_line --regexp "^walsync: app: failed: upload: .*: the replica is age-encrypted: give --age-identity \(and --age-recipient to write to it\); not restarting$"
    refute_output --partial "another database"
    refute_output --partial "restarting in"
  done
  # nothing plain was written into the encrypted replica
  for o in rep/app/ltx/*/*.ltx; do [ "$(head -c 21 "$o")" = "age-encryption.org/v1" ]; done
}

@test "age: a wrong identity is permanent: one line, exit 1, no retries, nothing written" {
  encrypted_replica
  run s3-get --age-identity other.txt "file://$T/rep/app"
  [ "$status" -eq 1 ]
  [ "${#lines[@]}" -eq 1 ]
  assert_output --partial "no identity matches this file (wrong --age-identity?)"
  run s3-verify --age-identity other.txt "file://$T/rep/app"
  [ "$status" -eq 1 ]
  [ "${#lines[@]}" -eq 1 ]
  assert_output --partial "no identity matches this file (wrong --age-identity?)"
  run walsync restore app -b "file://$T/rep" -o r.db --age-identity other.txt
  [ "$status" -eq 1 ]
  [ "${#lines[@]}" -eq 1 ]
  assert_output --partial "no identity matches this file (wrong --age-identity?)"
  [ ! -e r.db ]
  run timeout 60 walsync watch app.db -b "file://$T/rep" --age-identity other.txt
  [ "$status" -eq 1 ]
  assert_line --regexp "^walsync: app: failed: upload: .*: no identity matches this file \(wrong --age-identity\?\); not restarting$"
  refute_output --partial "restarting in"
  run timeout 60 walsync replicate app -b "file://$T/rep" --local rr.db --age-identity other.txt --interval 100ms
  [ "$status" -eq 1 ]
  [ "${#lines[@]}" -eq 1 ]
  assert_output --partial "no identity matches this file (wrong --age-identity?)"
  [ ! -e rr.db ]
  # the replica is as the right key left it
  walsync restore app -b "file://$T/rep" -o r.db --age-identity key.txt
  [ "$(sqlite3 r.db 'SELECT count(*) FROM t')" -eq 5 ]
}

@test "age: s3-get fetches a multi-MiB encrypted file in ranged parts, as a plain one, and still sees it cut short" {
  sqlite3 "$T/big.db" "PRAGMA journal_mode=WAL; CREATE TABLE t(v); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) INSERT INTO t SELECT hex(randomblob(500)) FROM n;" >/dev/null
  url=$(s3_url big)
  ltx-encode --db "$T/big.db" --txid 1 > "$T/big.ltx"
  s3-put --age-identity "$T/key.txt" "$url" < "$T/big.ltx"
  plain=$(stat -c %s "$T/big.ltx")
  parts=$(( (plain + 4194303) / 4194304 ))
  [ "$parts" -ge 2 ]
  start_proxy
  s3-get --endpoint "$PROXY" --parallel 4 --age-identity "$T/key.txt" "$url" > "$T/out.ltx"
  stop_proxy
  cmp "$T/out.ltx" "$T/big.ltx"
  # one GET of the age header to size the parts (the connections share it), then the parts
  [ "$(proxy_count '^GET /[^?]*/0000000000000001-0000000000000001\.ltx ')" -eq $((1 + parts)) ]
  # the last part reads through the end: a cut-short object fails (exit 3), on file:// too
  ltx-encode --db "$T/big.db" --txid 1 | s3-put --age-identity "$T/key.txt" "file://$T/rep"
  o="$T/rep/ltx/0/0000000000000001-0000000000000001.ltx"
  truncate -s $(( $(stat -c %s "$o") - 70000 )) "$o"
  run s3-get --age-identity "$T/key.txt" "file://$T/rep"
  [ "$status" -eq 3 ]
}
