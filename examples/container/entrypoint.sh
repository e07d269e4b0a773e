#!/bin/sh
# entrypoint.sh - a container's entrypoint, as `litestream replicate -exec`:
#   ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
#   CMD ["/app/server", "--db", "/data/app.db"]
# On a fresh volume walsync restores the database from its replica (none
# yet: the app creates it), runs the app as its child, backs the database
# up while it runs, forwards SIGTERM (docker stop) to it, stores every
# commit once it exits and exits with its status (walsync(1), EXEC MODE).
# Credentials: the AWS chain (walsync-credentials(7)), e.g. a task role.
# Metrics and /healthz on loopback; set WALSYNC_METRICS_ADDR=0.0.0.0:9090
# to let Prometheus scrape from outside the container (no TLS, no auth).
set -eu
exec walsync watch "${WALSYNC_DB:-/data/app.db}" -b "${WALSYNC_URL:?set WALSYNC_URL, e.g. s3://bucket/prod}" \
  --metrics-addr "${WALSYNC_METRICS_ADDR:-127.0.0.1:9090}" -- "$@"
