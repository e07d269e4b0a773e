#!/bin/bash
# ssh-between-hosts.sh - the pipeline split across hosts with ssh(1).
#
#   ssh-between-hosts.sh backup  DBHOST DB URL     tail a database on DBHOST, encode
#                                                  and store here (DBHOST needs only wal-tail)
#   ssh-between-hosts.sh restore URL HOST OUT      plan and fetch here, apply on HOST
#   ssh-between-hosts.sh copy    DBHOST DB HOST OUT  a live copy of DB on HOST, without object storage
#
# SSH (default "ssh") may be any command that runs its second argument on the
# host named by its first, e.g. SSH="bash -c" with HOST "" for a local trial.
set -euo pipefail
SSH=${SSH:-ssh}
STATE=${STATE:-$HOME/.local/state/walsync-ssh}
mkdir -p "$STATE"
on() { local h=$1; shift; if [ "$SSH" = "bash -c" ]; then bash -c "$*"; else $SSH "$h" "$*"; fi; }
case ${1:-} in
  backup)
    [ $# -eq 4 ] || { echo "usage: $0 backup DBHOST DB URL" >&2; exit 2; }
    on "$2" "wal-tail '$3'" | ltx-encode --state "$STATE/$(basename "$3")" | s3-put "$4" ;;
  restore)
    [ $# -eq 4 ] || { echo "usage: $0 restore URL HOST OUT" >&2; exit 2; }
    s3-get "$2" | on "$3" "ltx-apply '$4'" ;;
  copy)
    [ $# -eq 5 ] || { echo "usage: $0 copy DBHOST DB HOST OUT" >&2; exit 2; }
    on "$2" "wal-tail '$3'" | ltx-encode --state "$STATE/$(basename "$3")" | on "$4" "ltx-apply --live '$5'" ;;
  *) echo "usage: $0 backup|restore|copy ..." >&2; exit 2 ;;
esac
