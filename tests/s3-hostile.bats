#!/usr/bin/env bats
# Hostile or odd S3 servers: tests/fake-s3.py on loopback plays each one; Swift
# (scripts/with-s3) where a real server shows the case.
load test_helper/common
load test_helper/s3

setup() {
  GOLD="$WALSYNC_VECTORS/ltx/chain"
  # The fake server takes any credentials.
  export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-fake} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-fake}
}

teardown() {
  if [ -n "${FAKE_PID:-}" ]; then
    kill "$FAKE_PID" 2>/dev/null || true
    wait "$FAKE_PID" 2>/dev/null || true
  fi
  if [ -n "${TOOL_PID:-}" ]; then
    kill "$TOOL_PID" 2>/dev/null || true
    wait "$TOOL_PID" 2>/dev/null || true
  fi
}

# start_fake [fake-s3.py args]: FAKE (endpoint URL), FAKE_PID; fake_mode MODE
# switches its behaviour.
start_fake() {
  rm -f "$T/fake.port"
  : > "$T/fake.mode"
  python3 "$REPO_ROOT/tests/fake-s3.py" --port-file "$T/fake.port" --mode-file "$T/fake.mode" "$@" 3>&- &
  FAKE_PID=$!
  local i
  for i in $(seq 1 100); do [ -s "$T/fake.port" ] && break; sleep 0.05; done
  [ -s "$T/fake.port" ] || { echo "fake S3 did not start" >&2; return 1; }
  FAKE="http://127.0.0.1:$(cat "$T/fake.port")"
}
fake_mode() { echo "$1" > "$T/fake.mode"; }

# The first 3 files of the golden chain on the fake server, then the 4th
# to be appended by s3-put (it checks the remote's last trailer first).
fake_chain() {
  start_fake
  local files=("$GOLD"/*.ltx)
  cat "${files[@]:0:3}" | s3-put --sync-interval 0 --endpoint "$FAKE" s3://b/app
  NEXT=${files[3]}
}

@test "hostile: a suffix range answered with another range is refused, not read as the trailer" {
  fake_chain
  fake_mode tail-shifted
  run s3-put --sync-interval 0 --retries 0 --endpoint "$FAKE" s3://b/app < "$NEXT"
  assert_failure 1
  size=$(stat -c %s "$GOLD/0000000000000003-0000000000000003.ltx")
  assert_output "s3-put: get app/0000/0000000000000003-0000000000000003.ltx: asked for the last 16 bytes, the server answered 206 with Content-Range: bytes 0-16/$size and 17 bytes"
}

@test "hostile: a server that ignores Range: the right bytes are taken from its 200" {
  fake_chain
  fake_mode ignore-range
  run s3-put --sync-interval 0 --retries 0 --endpoint "$FAKE" s3://b/app < "$NEXT"
  assert_success
  run s3-ls --endpoint "$FAKE" s3://b/app
  assert_success
  assert_output --partial "0000000000000004"
  # A restore to a time reads each candidate's 100-byte header.
  run s3-get -n --timestamp 2100-01-01T00:00:00Z --endpoint "$FAKE" s3://b/app
  assert_success
  assert_line --index 3 --partial "0000000000000004-0000000000000004.ltx"
  # A ranged raw read of the middle of an object, from a 200 of all of it.
  head -c 100000 /dev/urandom > "$T/obj"
  fake_mode ""
  s3-put --raw --endpoint "$FAKE" s3://b/raw < "$T/obj"
  fake_mode ignore-range
  s3-get --raw --endpoint "$FAKE" s3://b/raw > "$T/back"
  cmp "$T/obj" "$T/back"
}

@test "hostile: endless pagination is bounded by WALSYNC_S3_MAX_LIST_KEYS" {
  start_fake
  fake_mode endless-list
  WALSYNC_S3_MAX_LIST_KEYS=5000 run timeout 60 s3-ls --raw --endpoint "$FAKE" s3://b/app
  assert_failure 1
  assert_output "s3-ls: list s3://b/app/: ListObjectsV2: more than 5000 keys (WALSYNC_S3_MAX_LIST_KEYS)"
  WALSYNC_S3_MAX_LIST_KEYS=5x run s3-ls --raw --endpoint "$FAKE" s3://b/app
  assert_failure 2
  assert_output "s3-ls: WALSYNC_S3_MAX_LIST_KEYS=5x: want a positive number"
}

@test "hostile: a repeated continuation token is an error" {
  start_fake
  fake_mode repeat-token
  run timeout 60 s3-ls --raw --endpoint "$FAKE" s3://b/app
  assert_failure 1
  assert_output "s3-ls: list s3://b/app/: ListObjectsV2: the server repeated a continuation token"
}

@test "hostile: a server dripping one byte a second is given up after --timeout" {
  start_fake
  head -c 4000 /dev/urandom > "$T/obj"
  s3-put --raw --endpoint "$FAKE" s3://b/raw < "$T/obj"
  fake_mode drip
  # stdout gets the bytes that did arrive; stderr one line
  run bash -c "timeout 120 s3-get --raw --timeout 2 --retries 0 --endpoint '$FAKE' s3://b/raw 2>&1 >/dev/null"
  assert_failure 1
  assert_line --index 0 "s3-get: get raw: too slow: under 1 KiB/s for 2 s (GET $FAKE) (gave up after 1 attempts)"
  [ "${#lines[@]}" -eq 1 ]
}

@test "hostile: control characters in a server's error text are printed escaped, on one line" {
  start_fake
  fake_mode evil-error
  run s3-ls --endpoint "$FAKE" s3://b/app
  assert_failure 1
  assert_output 's3-ls: list s3://b/app/: AccessDenied: denied \x1b[31mRED\x1b[0m\x0as3-ls: all good\x0aforged'
  [ "${#lines[@]}" -eq 1 ]
}

@test "hostile: a '?' in a replica URL is refused (exit 2)" {
  run s3-ls "s3://b/app?versionId=3"
  assert_failure 2
  assert_output "s3-ls: malformed URL s3://b/app?versionId=3: '?' has no meaning in a replica URL"
  run s3-get "s3://b/app?x"
  assert_failure 2
  run s3-ls "file://$T/dir?x"
  assert_failure 2
}

@test "hostile: TLS failures say what is wrong and how to trust a CA; --ca-bundle and AWS_CA_BUNDLE work" {
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/key.pem" -out "$T/cert.pem" -days 2 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/okey.pem" -out "$T/other.pem" -days 2 \
    -subj "/CN=other.invalid" -addext "subjectAltName=DNS:other.invalid" 2>/dev/null
  start_fake --cert "$T/cert.pem" --key "$T/key.pem"
  ep="https://127.0.0.1:$(cat "$T/fake.port")"
  run s3-ls --retries 0 --endpoint "$ep" s3://b/app
  assert_failure 1
  assert_output "s3-ls: list s3://b/app/: SSL certificate problem: self-signed certificate; to trust a private CA, give its PEM file with --ca-bundle or AWS_CA_BUNDLE (GET $ep)"
  run s3-ls --retries 0 --endpoint "$ep" --ca-bundle "$T/cert.pem" s3://b/app
  assert_success
  AWS_CA_BUNDLE="$T/cert.pem" run s3-ls --retries 0 --endpoint "$ep" s3://b/app
  assert_success
  kill "$FAKE_PID"; wait "$FAKE_PID" 2>/dev/null || true
  start_fake --cert "$T/other.pem" --key "$T/okey.pem"
  ep="https://127.0.0.1:$(cat "$T/fake.port")"
  run s3-ls --retries 0 --endpoint "$ep" --ca-bundle "$T/other.pem" s3://b/app
  assert_failure 1
  assert_output "s3-ls: list s3://b/app/: SSL: no alternative certificate subject name matches target host name '127.0.0.1' (GET $ep)"
  run s3-ls --retries 0 --endpoint "$ep" --ca-bundle "$T/missing.pem" s3://b/app
  assert_failure 1
  assert_output --partial "; to trust a private CA, give its PEM file with --ca-bundle or AWS_CA_BUNDLE (GET $ep)"
}

# ---- against Swift ----

@test "hostile (Swift): a key holding a control character does not stop listings or restores" {
  require_s3
  url=$(s3_url app)
  cat "$GOLD"/*.ltx | s3-put "$url"
  bad=$(printf 'bad\001key')
  echo x | s3-put --raw "$url/$bad"
  run s3-ls --raw --retries 0 "$url"
  assert_success
  assert_line --partial "$bad	2"
  run bash -c "s3-get --retries 0 '$url' | ltx-apply '$T/r.db'"
  assert_success
  [ "$(sqlite3 "$T/r.db" 'pragma integrity_check')" = ok ]
  s3-rm --raw "$url" "$bad"
  run s3-ls --raw "$url"
  refute_output --partial "bad"
}

# uploads_under PREFIX-PATH: the multipart uploads Swift lists under it.
uploads_under() {
  s3curl GET "/$WALSYNC_TEST_BUCKET?prefix=$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' "$1")&uploads=" |
    grep -o "<UploadId>[^<]*</UploadId>" || true
}

@test "hostile (Swift): SIGTERM and SIGINT abort a multipart upload on the way out" {
  require_s3
  for sig in TERM INT; do
    url=$(s3_url mp$sig)
    path=${url#s3://$WALSYNC_TEST_BUCKET/}
    # 6 MiB, then an open pipe: part 1 is sent, s3-put waits for the rest.
    rm -f "$T/in" && mkfifo "$T/in"
    s3-put --raw --part-size 5M "$url/big" < "$T/in" &
    TOOL_PID=$!
    exec 4> "$T/in"
    head -c $((6 << 20)) /dev/urandom >&4
    for i in $(seq 1 200); do [ -n "$(uploads_under "$path/")" ] && break; sleep 0.1; done
    [ -n "$(uploads_under "$path/")" ]
    kill -$sig "$TOOL_PID"
    st=0
    wait "$TOOL_PID" || st=$?
    TOOL_PID=
    exec 4>&-
    [ "$st" -eq $((128 + $(kill -l $sig))) ]
    [ -z "$(uploads_under "$path/")" ]
  done
}

@test "hostile (Swift): s3-verify lists unfinished multipart uploads under the prefix" {
  require_s3
  url=$(s3_url app)
  path=${url#s3://$WALSYNC_TEST_BUCKET/}
  cat "$GOLD"/*.ltx | s3-put "$url"
  run s3curl POST "/$WALSYNC_TEST_BUCKET/$path/0009/0000000000000001-0000000000000010.ltx?uploads="
  id=$(echo "$output" | sed -n 's/.*<UploadId>\([^<]*\)<\/UploadId>.*/\1/p')
  [ -n "$id" ]
  run s3-verify "$url"
  assert_success
  assert_line --regexp "^s3-verify: $url: unfinished multipart upload of $path/0009/0000000000000001-0000000000000010.ltx \(begun 20[0-9-]+T[0-9:.]+Z, upload id $id\)$"
  assert_line "uploads	1 unfinished multipart"
  s3curl DELETE "/$WALSYNC_TEST_BUCKET/$path/0009/0000000000000001-0000000000000010.ltx?uploadId=$id"
  run s3-verify "$url"
  refute_output --partial "multipart"
}
