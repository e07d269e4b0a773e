#!/usr/bin/env bats
# The S3 transport against a real server (Swift s3api): multipart, paging,
# SigV4 failures, bad endpoints, and faults injected by tests/fault-proxy.py.
load test_helper/common
load test_helper/s3

setup() {
  require_s3
  GOLD="$WALSYNC_VECTORS/ltx/chain"
}

teardown() {
  stop_proxy
}

# no_uploads_left: no multipart upload in progress anywhere in the bucket.
no_uploads_left() {
  run s3curl GET "/$WALSYNC_TEST_BUCKET?uploads="
  assert_success
  assert_output --partial "ListMultipartUploadsResult"
  refute_output --partial "<Upload>"
}

@test "transport: multipart upload of 64 MiB in 5 MiB parts, bounded memory, byte-exact" {
  url=$(s3_url mp)
  head -c $((64 << 20)) /dev/urandom > "$T/big"
  run /usr/bin/time -f "%M" s3-put --raw --part-size 5M "$url/big" < "$T/big"
  assert_success
  rss_kb=${lines[-1]}
  echo "s3-put peak RSS: ${rss_kb} kB" >&3
  [ "$rss_kb" -lt 48000 ]  # 64 MiB slurped would be > 65000 (ASan build: ~36000)
  s3-get --raw "$url/big" > "$T/back"
  cmp "$T/big" "$T/back"
  run s3-ls --raw "$url"
  assert_output --partial "big	67108864"
  no_uploads_left
}

@test "transport: ListObjectsV2 pages past 1000 keys; DeleteObjects batches" {
  url=$(s3_url page)
  # Fixture shortcut: Swift's bulk middleware creates the 1005 objects from
  # tar archives (4 in parallel); s3-put would need 1005 PUTs (~11 s here).
  mkdir -p "$T/keys" && (cd "$T/keys" && for i in $(seq -f "%04g" 1 1005); do echo "$i" > "k$i"; done)
  for n in 0 1 2 3; do (cd "$T/keys" && ls | awk "NR % 4 == $n" | tar cf "$T/k$n.tar" -T -); done
  tok=$(curl -s -i -H "X-Auth-User: $AWS_ACCESS_KEY_ID" -H "X-Auth-Key: $AWS_SECRET_ACCESS_KEY" \
    "http://127.0.0.1:$(s3_port)/auth/v1.0" | tr -d '\r' | awk '/^X-Auth-Token:/ {print $2}')
  prefix=${url#s3://}
  for n in 0 1 2 3; do
    curl -sf -X PUT -H "X-Auth-Token: $tok" -H "Accept: application/json" -T "$T/k$n.tar" \
      "http://127.0.0.1:$(s3_port)/v1/AUTH_test/$prefix?extract-archive=tar" > "$T/bulk$n" &
  done
  wait
  grep -q '"Number Files Created": 25[12]' "$T/bulk0"
  run s3-ls --raw "$url"
  assert_success
  [ "${#lines[@]}" -eq 1005 ]
  run s3-ls --raw --max-keys 100 "$url"
  [ "${#lines[@]}" -eq 1005 ]
  assert_line --index 0 --partial "k0001"
  assert_line --index 1004 --partial "k1005"
  s3-ls --raw "$url" | s3-rm --raw "$url" -
  run s3-ls --raw "$url"
  assert_output ""
}

@test "transport: wrong secret, wrong region, unknown key: exit 1 naming the cause, no retries" {
  url=$(s3_url auth)
  start_proxy
  run s3-ls -v --endpoint "$PROXY" --secret-key wrong "$url"
  assert_failure 1
  assert_output --partial "SignatureDoesNotMatch"
  refute_output --partial "retry"
  run s3-ls -v --endpoint "$PROXY" --region eu-west-1 "$url"
  assert_failure 1
  assert_output --partial "region"
  run s3-put -v --raw --endpoint "$PROXY" --access-key nobody:none "$url/k" < /dev/null
  assert_failure 1
  assert_output --partial "put "
  refute_output --partial "retry"
  [ "$(wc -l < "$PROXY_LOG")" -eq 3 ]
}

@test "transport: missing bucket, unreachable endpoint (bounded), no credentials" {
  run s3-ls "s3://no-such-bucket-$$/x"
  assert_failure 1
  assert_output --partial "does not exist"
  start=$(date +%s)
  run s3-ls --endpoint http://127.0.0.1:1 "s3://$WALSYNC_TEST_BUCKET/x"
  assert_failure 1
  assert_output --partial "gave up after 6 attempts"
  [ $(( $(date +%s) - start )) -lt 20 ]
  run env -u AWS_ACCESS_KEY_ID s3-ls "s3://$WALSYNC_TEST_BUCKET/x"
  assert_failure 1
  assert_output --partial "no credentials"
  run s3-ls --endpoint "ftp://127.0.0.1:1" "s3://$WALSYNC_TEST_BUCKET/x"
  assert_failure 2
}

@test "transport: 500, 503 and 429 are retried; uploads complete once" {
  url=$(s3_url retry)
  start_proxy --faults "PUT:500,PUT:429,PUT:503"
  head -c 5000 /dev/urandom > "$T/o"
  run s3-put -v --raw --endpoint "$PROXY" "$url/o" < "$T/o"
  assert_success
  [ "$(proxy_count '^PUT ')" -eq 4 ]
  s3-get --raw "$url/o" | cmp - "$T/o"
}

@test "transport: multipart survives a reset part and a failed complete" {
  url=$(s3_url mpf)
  head -c $((11 << 20)) /dev/urandom > "$T/o"
  start_proxy --faults "PUT:reset,POST:500,PUT:stall"
  run s3-put --raw --timeout 2 --part-size 5M --endpoint "$PROXY" "$url/o" < "$T/o"
  assert_success
  s3-get --raw "$url/o" | cmp - "$T/o"
  no_uploads_left
}

@test "transport: an LTX file larger than a part goes up in parts read from its spool file, through faults" {
  url=$(s3_url spoolmp)
  sqlite3 "$T/src.db" "CREATE TABLE t(b BLOB); INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 20000);"
  ltx-encode --db "$T/src.db" > "$T/big.ltx"
  [ "$(stat -c %s "$T/big.ltx")" -gt $((15 << 20)) ]
  start_proxy --faults "PUT:reset,POST:500,PUT:stall"
  run /usr/bin/time -f "%M" s3-put --timeout 2 --part-size 5M --endpoint "$PROXY" "$url" < "$T/big.ltx"
  assert_success
  echo "s3-put peak RSS, 20 MB LTX file in 5 MiB parts: ${lines[-1]} kB" >&3
  [ "$(proxy_count '^PUT .*partNumber=')" -ge 4 ]
  run bash -c "set -o pipefail; s3-get '$url' | ltx-apply '$T/r.db'"
  assert_success
  [ "$(sqlite3 "$T/r.db" .sha3sum)" = "$(sqlite3 "$T/src.db" .sha3sum)" ]
  no_uploads_left
}

@test "transport: GET resumes after resets and stalls without duplicating bytes" {
  url=$(s3_url getf)
  head -c $((3 << 20)) /dev/urandom > "$T/o"
  s3-put --raw "$url/o" < "$T/o"
  start_proxy --faults "GET:reset,GET:500,GET:stall,GET:reset"
  run bash -c "s3-get --raw -v --timeout 2 --endpoint '$PROXY' '$url/o' > '$T/back'"
  assert_success
  cmp "$T/o" "$T/back"
  [ "$(proxy_count '^GET ')" -eq 5 ]
}

@test "transport: replication and restore through faults" {
  url=$(s3_url chainf)
  start_proxy --faults "PUT:500,PUT:reset,GET:reset,GET:429,GET:reset,HEAD:500"
  run bash -c "cat '$GOLD'/*.ltx | s3-put --endpoint '$PROXY' '$url'"
  assert_success
  rm -f "$T/r.db"
  run bash -c "set -o pipefail; s3-get --endpoint '$PROXY' '$url' | ltx-apply '$T/r.db'"
  assert_success
  [ "$(sha "$T/r.db")" = 1ad4624281610353b066ca8296870b64cefc58d3a98c27305e7bb13da596626c ]
}

@test "transport: a permanent failure ends with a clear error, bounded tries, nothing half-visible" {
  url=$(s3_url perm)
  start_proxy --always "PUT:500"
  head -c 1000 /dev/urandom > "$T/small"
  run s3-put --raw --retries 2 --endpoint "$PROXY" "$url/small" < "$T/small"
  assert_failure 1
  assert_output --partial "InternalError"
  assert_output --partial "gave up after 3 attempts"
  [ "$(proxy_count '^PUT ')" -eq 3 ]
  head -c $((11 << 20)) /dev/urandom > "$T/big"
  run s3-put --raw --retries 1 --part-size 5M --endpoint "$PROXY" "$url/big" < "$T/big"
  assert_failure 1
  [ "$(proxy_count '^DELETE .*uploadId=')" -eq 1 ]
  run s3-ls --raw "$url"
  assert_output ""
  no_uploads_left
  # an LTX stream: nothing at the final keys
  run bash -c "cat '$GOLD'/*.ltx | s3-put --retries 1 --endpoint '$PROXY' '$url/rep'"
  assert_failure 1
  run s3-ls "$url/rep"
  assert_output ""
}

@test "transport: a stalled server is abandoned after --timeout" {
  url=$(s3_url stall)
  echo hi | s3-put --raw "$url/o"
  head -c $((1 << 20)) /dev/urandom | s3-put --raw "$url/o"
  start_proxy --always "GET:stall"
  start=$(date +%s)
  run bash -c "s3-get --raw --timeout 1 --retries 1 --endpoint '$PROXY' '$url/o' > /dev/null"
  assert_failure 1
  assert_output --partial "gave up after 2 attempts"
  [ $(( $(date +%s) - start )) -lt 15 ]
}

@test "transport: virtual-hosted addressing (BUCKET.localhost) and path-style agree" {
  url=$(s3_url vh)
  head -c 7000 /dev/urandom > "$T/o"
  vh=(--endpoint "http://localhost:$(s3_port)" --addressing virtual)
  s3-put --raw "${vh[@]}" "$url/k y" < "$T/o"
  s3-get --raw "$url/k y" | cmp - "$T/o"
  s3-get --raw "${vh[@]}" "$url/k y" | cmp - "$T/o"
  run s3-ls --raw "${vh[@]}" "$url"
  assert_output --partial "k y	7000"
  s3-rm --raw "${vh[@]}" "$url" "k y"
  run s3-ls --raw "$url"
  assert_output ""
}
