# Shared setup for every bats file: `load test_helper/common`.
bats_load_library bats-support
bats_load_library bats-assert

REPO_ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
: "${WALSYNC_BIN:=$REPO_ROOT/build/bin}"
export PATH="$WALSYNC_BIN:$REPO_ROOT/tools:$PATH"
# Golden LTX vectors: the committed copy in tests/data/vectors (a user's clone
# has no ../shared); WALSYNC_VECTORS may point at the full set.
: "${WALSYNC_VECTORS:=$REPO_ROOT/tests/data/vectors}"
export WALSYNC_VECTORS

# Per-test scratch directory, removed by bats.
T="$BATS_TEST_TMPDIR"

sha() { sha256sum "$1" | cut -d' ' -f1; }

# s3_available: true when scripts/with-s3 started a server for this run.
s3_available() { [ -n "${AWS_ENDPOINT_URL_S3:-}" ]; }

# No test reads the developer's ~/.aws or asks a real metadata service
# (169.254.169.254) or container endpoint: tests/credentials.bats points
# these at its own files and fake endpoints.
export AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/nonexistent/walsync-test/config AWS_SHARED_CREDENTIALS_FILE=/nonexistent/walsync-test/credentials
unset AWS_PROFILE AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_CONTAINER_CREDENTIALS_FULL_URI \
  AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_EC2_METADATA_SERVICE_ENDPOINT

# hot_journal DB: DB (a 300-row table, rollback journal) and a hot DB-journal,
# left by a writer that died inside an UPDATE whose pages spilled to DB
# (cache_size=2): the next SQLite opener of DB rolls the journal back into it.
hot_journal() {
  python3 - "$1" <<'PY'
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=DELETE")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
c.execute("BEGIN")
for i in range(300):
    c.execute("INSERT INTO t(v) VALUES(?)", ("row %d %s" % (i, "x" * 200),))
c.execute("COMMIT")
c.execute("PRAGMA cache_size=2")
c.execute("BEGIN")
c.execute("UPDATE t SET v = 'changed ' || v")
os._exit(0)
PY
  [ -s "$1-journal" ]
}
