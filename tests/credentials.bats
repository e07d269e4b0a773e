#!/usr/bin/env bats
# The AWS credential chain (walsync-credentials(7)) against fake endpoints on
# loopback (tests/fake-aws.py: IMDSv2, ECS/EKS container, STS, and an S3
# front that refuses expired session tokens): every source, their order,
# profiles with endpoint_url, refresh during a running watch, and failures
# that never print a secret. Nothing here contacts 169.254.169.254.
load test_helper/common
load test_helper/s3

setup() {
  require_s3
  cd "$T"
  # The test's own shared files, no credentials in the environment.
  export HOME="$T" AWS_CONFIG_FILE="$T/config" AWS_SHARED_CREDENTIALS_FILE="$T/credentials"
  S3_KEY=$AWS_ACCESS_KEY_ID S3_SECRET=$AWS_SECRET_ACCESS_KEY
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
  printf 'payload %s\n' "$BATS_TEST_NUMBER" > "$T/obj"
}

teardown() {
  if [ -n "${FAKE_PID:-}" ]; then kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; fi
}

# start_fake [fake-aws.py args]: FAKE (its URL), FAKE_LOG; S3 requests sent to
# it reach the local S3 server.
start_fake() {
  FAKE_LOG="$T/fake.log"
  python3 "$REPO_ROOT/tests/fake-aws.py" --upstream "$(s3_port)" --port-file "$T/fake.port" \
    --log "$FAKE_LOG" --access-key "$S3_KEY" --secret "$S3_SECRET" --lifetime 120 "$@" 3>&- &
  FAKE_PID=$!
  local i
  for i in $(seq 1 100); do [ -s "$T/fake.port" ] && break; sleep 0.05; done
  [ -s "$T/fake.port" ] || { echo "fake-aws did not start" >&2; return 1; }
  FAKE="http://127.0.0.1:$(cat "$T/fake.port")"
}

# roundtrip URL: s3-put then s3-get of $T/obj.
roundtrip() {
  s3-put --raw "$1" < "$T/obj" && s3-get --raw "$1" | cmp - "$T/obj"
}

@test "credentials: a profile from the shared files, with region and endpoint_url" {
  local ep=$AWS_ENDPOINT_URL_S3
  unset AWS_ENDPOINT_URL_S3 AWS_REGION
  cat > config <<EOF
[default]
region = us-west-1
[profile swift]
region = us-east-1
endpoint_url = $ep
EOF
  printf '[swift]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$S3_KEY" "$S3_SECRET" > credentials
  url=$(s3_url prof)/o
  AWS_PROFILE=swift roundtrip "$url"
  # The services form, with the keys in the config file.
  cat > config <<EOF
[profile svc]
aws_access_key_id = $S3_KEY
aws_secret_access_key = $S3_SECRET
services = local
[services local]
s3 =
  endpoint_url = $ep
EOF
  : > credentials
  AWS_PROFILE=svc s3-get --raw "$url" | cmp - obj
  # A profile that is not there is a usage error; no profile, no credentials.
  run env AWS_PROFILE=nope s3-ls "$url"
  assert_failure 2
  assert_output "s3-ls: AWS_PROFILE nope: no such profile in $T/credentials or $T/config"
  run s3-ls --endpoint "$ep" "$url"
  assert_failure 1
  assert_output "s3-ls: no credentials: none in the environment, web identity, profile default or the container endpoint, and instance metadata is disabled (see walsync-credentials(7))"
}

@test "credentials: the environment comes before the profile, the profile's keys before credential_process" {
  cat > config <<EOF
[default]
aws_access_key_id = WRONGKEY
aws_secret_access_key = WRONGSECRET
credential_process = echo not-run >> $T/ran
EOF
  AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET roundtrip "$(s3_url env)/o"
  run s3-ls "$(s3_url env)"
  assert_failure 1
  assert_output --regexp "InvalidAccessKeyId|SignatureDoesNotMatch"
  refute_output --partial "WRONGSECRET"
  [ ! -e ran ]
}

@test "credentials: credential_process, Version 1 JSON on stdout" {
  cat > creds.sh <<EOF
#!/bin/sh
echo "called" >> $T/calls
echo "progress on stderr" >&2
printf '{"Version": 1, "AccessKeyId": "%s", "SecretAccessKey": "%s"}\n' "$S3_KEY" "$S3_SECRET"
EOF
  chmod +x creds.sh
  printf '[default]\ncredential_process = %s/creds.sh\n' "$T" > config
  roundtrip "$(s3_url proc)/o"
  [ "$(wc -l < calls)" -eq 2 ]
  # Failures name the source, never the output.
  printf '#!/bin/sh\necho "{\\"Version\\": 2, \\"AccessKeyId\\": \\"AK\\", \\"SecretAccessKey\\": \\"SECRETPROC\\"}"\nexit 4\n' > creds.sh
  run s3-ls "$(s3_url proc)"
  assert_failure 1
  assert_output "s3-ls: profile default: credential_process: command failed (exit status 4) (see walsync-credentials(7))"
}

@test "credentials: web identity, STS AssumeRoleWithWebIdentity; a refused token is not printed" {
  start_fake --web-token "jwt-$$"
  echo "jwt-$$" > token
  export AWS_WEB_IDENTITY_TOKEN_FILE="$T/token" AWS_ROLE_ARN="arn:aws:iam::123456789012:role/backup"
  export AWS_ROLE_SESSION_NAME=walsync-test AWS_ENDPOINT_URL_STS="$FAKE/sts" AWS_ENDPOINT_URL_S3="$FAKE"
  # Web identity comes before the shared files.
  printf '[default]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n' > credentials
  roundtrip "$(s3_url sts)/o"
  grep -qx "STS arn:aws:iam::123456789012:role/backup walsync-test tok-1" "$FAKE_LOG"
  grep -q "^S3 PUT .* tok-1 ok$" "$FAKE_LOG"
  ! grep -q "expired" "$FAKE_LOG"
  echo "stolen-jwt-$$" > token
  run s3-ls "$(s3_url sts)"
  assert_failure 1
  assert_output "s3-ls: web identity: HTTP 403 from $FAKE/sts: AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity (see walsync-credentials(7))"
  refute_output --partial "stolen"
}

@test "credentials: ECS/EKS container endpoint with the authorization token file" {
  start_fake --auth "Bearer pod-$$"
  echo "Bearer pod-$$" > auth
  export AWS_CONTAINER_CREDENTIALS_FULL_URI="$FAKE/ecs/v2/credentials" AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$T/auth"
  export AWS_ENDPOINT_URL_S3="$FAKE"
  local url; url=$(s3_url ecs)
  roundtrip "$url/o"
  grep -qx "ECS /ecs/v2/credentials tok-1" "$FAKE_LOG"
  grep -q "^S3 GET .* tok-2 ok$" "$FAKE_LOG"
  # The token variable is used when there is no file.
  unset AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
  AWS_CONTAINER_AUTHORIZATION_TOKEN="Bearer pod-$$" s3-get --raw "$url/o" | cmp - obj
  grep -qx "ECS /ecs/v2/credentials tok-3" "$FAKE_LOG"
  run env AWS_CONTAINER_AUTHORIZATION_TOKEN="Bearer wrong-$$" s3-ls "$url"
  assert_failure 1
  assert_output "s3-ls: container credentials: HTTP 401 from $FAKE/ecs/v2/credentials (see walsync-credentials(7))"
  refute_output --partial "wrong-$$"
  # Plain http only to loopback: elsewhere it would carry the token in clear.
  run env AWS_CONTAINER_CREDENTIALS_FULL_URI=http://example.invalid/creds s3-ls "$url"
  assert_failure 2
  assert_output --partial "http only to a loopback address"
}

@test "credentials: EC2 IMDSv2 (token, role, credentials); AWS_EC2_METADATA_DISABLED turns it off" {
  start_fake --role backup-role
  unset AWS_EC2_METADATA_DISABLED
  export AWS_EC2_METADATA_SERVICE_ENDPOINT="$FAKE" AWS_ENDPOINT_URL_S3="$FAKE"
  export AWS_METADATA_SERVICE_TIMEOUT=20  # a busy machine: the default 1 s is for a real IMDS
  roundtrip "$(s3_url imds)/o"
  [ "$(sed -n 1,3p "$FAKE_LOG")" = "$(printf 'IMDS token\nIMDS role\nIMDS creds tok-1')" ]
  grep -q "^S3 PUT .* tok-1 ok$" "$FAKE_LOG"
  : > "$FAKE_LOG"
  run env AWS_EC2_METADATA_DISABLED=true s3-ls "$(s3_url imds)"
  assert_failure 1
  assert_output --partial "no credentials"
  [ ! -s "$FAKE_LOG" ]
  # The container endpoint comes before instance metadata.
  AWS_CONTAINER_CREDENTIALS_FULL_URI="$FAKE/ecs/x" s3-ls "$(s3_url imds)" > /dev/null
  grep -q "^ECS /ecs/x" "$FAKE_LOG"
  ! grep -q "^IMDS" "$FAKE_LOG"
}

@test "credentials: the metadata service not answering is reported, bounded" {
  unset AWS_EC2_METADATA_DISABLED
  run env AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1 s3-ls "$(s3_url none)"
  assert_failure 1
  assert_output --partial "s3-ls: no credentials: none in the environment, web identity, profile default or the container endpoint, and instance metadata: "
  assert_output --partial "(PUT http://127.0.0.1:1/latest/api/token)"
}

@test "credentials: temporary credentials are refreshed inside a running watch" {
  # Every credential expires 3 s after it is issued; the S3 front refuses
  # expired tokens, as AWS does. The watch must keep storing transactions.
  start_fake --expiry 3 --auth "Bearer w"
  export AWS_CONTAINER_CREDENTIALS_FULL_URI="$FAKE/ecs/creds" AWS_CONTAINER_AUTHORIZATION_TOKEN="Bearer w"
  export AWS_ENDPOINT_URL_S3="$FAKE"
  sqlite3 app.db 'PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);' > /dev/null
  local url; url=$(s3_url watch)
  walsync watch -v app.db -b "$url" 2> watch.log &
  local pid=$! i
  for i in $(seq 1 16); do
    sqlite3 app.db "INSERT INTO t(v) VALUES('row $i')"
    sleep 0.5
  done
  # Past the first credentials' expiry; wait for the last row to be stored.
  for i in $(seq 1 100); do
    walsync restore app -b "$url" -o "r$i.db" 2>/dev/null && [ "$(sqlite3 "r$i.db" 'SELECT count(*) FROM t')" = 16 ] && break
    sleep 0.2
  done
  cat watch.log >&2
  kill -TERM "$pid"
  wait "$pid"
  ! grep -q " expired$" "$FAKE_LOG"
  grep -q "credentials: refreshed from container credentials, expire " watch.log
  # Uploads signed with credentials issued after the first ones had expired.
  local last; last=$(grep "^ECS " "$FAKE_LOG" | tail -1 | cut -d' ' -f3)
  [ "${last#tok-}" -ge 3 ]
  grep -q "^S3 PUT /.* ok$" "$FAKE_LOG"
  walsync restore app -b "$url" -o final.db
  [ "$(sqlite3 final.db .sha3sum)" = "$(sqlite3 app.db .sha3sum)" ]
}

@test "credentials: no failure prints a secret" {
  export AWS_SECRET_ACCESS_KEY="SECRETENV$$"  # without a key id: not a source
  printf '[default]\naws_secret_access_key = SECRETFILE%s\nregion = us-east-1\n' "$$" > credentials
  run s3-ls -v "$(s3_url sec)"
  assert_failure 1
  assert_output --partial "no credentials"
  refute_output --partial "SECRET"
  run s3-put -v --raw --secret-key "SECRETFLAG$$" "$(s3_url sec)/o" < obj
  assert_failure 1
  refute_output --partial "SECRET"
  run s3-put -v --raw --access-key "$S3_KEY" --secret-key "SECRETFLAG$$" "$(s3_url sec)/o" < obj
  assert_failure 1
  assert_output --partial "SignatureDoesNotMatch"
  refute_output --partial "SECRETFLAG"
}
