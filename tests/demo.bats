#!/usr/bin/env bats
# The README's main job (make demo) and its plumbing twin must work as shipped.

load test_helper/common

@test "demo: walsync watch, writes, walsync restore, byte-identical" {
  run "$REPO_ROOT/examples/demo.sh" "$T/demo"
  assert_success
  assert_output --partial "byte-identical: app.db == restored.db"
  assert_output --partial "integrity ok"
}

@test "demo: the same job with the plumbing tools" {
  run "$REPO_ROOT/examples/pipeline-demo.sh" "$T/pipe"
  assert_success
  assert_output --partial "byte-identical: app.db == restored.db"
}
