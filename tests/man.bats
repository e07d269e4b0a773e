#!/usr/bin/env bats
# Man pages: mandoc lint, and every runnable EXAMPLES line actually works.
#
# Convention: in the EXAMPLES section of man/ltx-*.1, each line of a
# `.Bd -literal` display that starts with "$ " is a runnable command.
# A page's commands run in order as one `bash -e -o pipefail` script in a
# fresh directory holding app.db, a small WAL-mode SQLite database with a
# table t(id INTEGER PRIMARY KEY, v TEXT). Lines without "$ " are output or
# prose and are not run.
load test_helper/common

MAN="$REPO_ROOT/man"

# examples PAGE: print the runnable commands of PAGE's EXAMPLES section.
examples() {
  awk '
    /^\.Sh / { ex = ($2 == "EXAMPLES"); next }
    ex && /^\.Bd -literal/ { lit = 1; next }
    ex && /^\.Ed/ { lit = 0; next }
    ex && lit && /^\$ / { sub(/^\$ /, ""); gsub(/\\-/, "-"); gsub(/\\e/, "\\"); print }
  ' "$1"
}

make_sample_db() {
  sqlite3 "$1" >/dev/null <<'SQL'
PRAGMA page_size=4096;
PRAGMA journal_mode=WAL;
CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
INSERT INTO t(v) SELECT printf('row %d %s', value, hex(randomblob(20))) FROM generate_series(1, 500);
CREATE INDEX t_v ON t(v);
SQL
}

# run_examples PAGE: run PAGE's examples in a fresh directory with app.db.
run_examples() {
  local page="$MAN/$1" dir="$T/${1%.*}"
  mkdir -p "$dir"
  examples "$page" > "$T/$1.sh"
  [ -s "$T/$1.sh" ] || { echo "$1: no runnable examples" >&2; return 1; }
  make_sample_db "$dir/app.db"
  run bash -c "cd '$dir' && bash -e -o pipefail '$T/$1.sh' </dev/null"
  if [ "$status" -ne 0 ]; then
    echo "--- examples of $1:" >&2
    cat "$T/$1.sh" >&2
  fi
  assert_success
}

@test "man: mandoc -Tlint -W warning is clean on every page" {
  run bash -c "mandoc -Tlint -W warning '$MAN'/*.[1-8]"
  assert_success
  assert_output ""
}

@test "man: every tool has a page with the required sections" {
  for tool in ltx-encode ltx-apply ltx-verify ltx-dump ltx-checksum ltx-merge; do
    for sec in NAME SYNOPSIS DESCRIPTION OPTIONS ENVIRONMENT "EXIT STATUS" EXAMPLES "SEE ALSO"; do
      grep -qx ".Sh $sec" "$MAN/$tool.1" || { echo "$tool.1: no $sec" >&2; return 1; }
    done
  done
  [ -f "$MAN/ltx.5" ]
}

@test "man: ltx-encode.1 examples run" {
  run_examples ltx-encode.1
}

@test "man: ltx-apply.1 examples run" {
  run_examples ltx-apply.1
}

@test "man: ltx-verify.1 examples run" {
  run_examples ltx-verify.1
}

@test "man: ltx-dump.1 examples run" {
  run_examples ltx-dump.1
}

@test "man: ltx-checksum.1 examples run" {
  run_examples ltx-checksum.1
}

@test "man: ltx-merge.1 examples run" {
  run_examples ltx-merge.1
}

@test "man: ltx.5 examples run" {
  run_examples ltx.5
}

@test "man: walsync-ack.5 examples run" {
  run_examples walsync-ack.5
}

@test "man: walsync_vfs.7 examples run" {
  export LD_LIBRARY_PATH="$WALSYNC_BIN/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  run_examples walsync_vfs.7
  assert_output "500|1"
}
