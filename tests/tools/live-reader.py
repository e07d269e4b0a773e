#!/usr/bin/env python3
"""Reader for the ltx-apply --live tests: checks every state it sees.

usage: live-reader.py REPLICA NTXNS STOPFILE [SO]
Loops until STOPFILE exists: in one read transaction reads counter.n, the
log table's count and max, the big table's count, the schema, and runs
PRAGMA quick_check every few rounds. Every state must be one the writer
committed (see live-writer.py) and n must never go down. Prints
"rounds=R errors=E max_n=N" and the first errors; exit 1 on any error.
With SO (the walsync_vfs extension), REPLICA is a URI opened once through
it: one connection whose view moves between transactions.
"""
import importlib.util, os, sqlite3, sys

db, ntx, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
vfs = None
if len(sys.argv) > 4:
    spec = importlib.util.spec_from_file_location("vfs_query", os.path.join(os.path.dirname(__file__), "vfs-query.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.load(sys.argv[4])
    vfs = sqlite3.connect(db, uri=True, isolation_level=None)
errors, rounds, last = [], 0, -1
while not os.path.exists(stop):
    rounds += 1
    try:
        c = vfs or sqlite3.connect(db, timeout=30, isolation_level=None)
        if vfs and vfs.in_transaction:  # left open by a failed round
            vfs.execute("ROLLBACK")
        c.execute("BEGIN")
        n = c.execute("SELECT n FROM counter").fetchone()[0]
        cnt, mx = c.execute("SELECT count(*), coalesce(max(n), 0) FROM log").fetchone()
        nbig, bigsum = c.execute("SELECT count(*), coalesce(sum(length(v)), 0) FROM big").fetchone()
        later = c.execute("SELECT count(*) FROM sqlite_master WHERE name IN ('later', 'log_v')").fetchone()[0]
        if rounds % 5 == 0:
            qc = c.execute("PRAGMA quick_check").fetchall()
            if qc != [("ok",)]:
                errors.append("quick_check: %r" % (qc[:3],))
        c.execute("COMMIT")
        if not vfs:
            c.close()
        want_big = 400 * len([k for k in range(350, n + 1, 700)])
        if cnt != n or mx != n:
            errors.append("torn: counter %d, log count %d max %d" % (n, cnt, mx))
        if nbig != want_big or bigsum != 1024 * want_big:
            errors.append("torn: counter %d, big %d rows %d bytes" % (n, nbig, bigsum))
        if later != (2 if n >= ntx // 2 else 0):
            errors.append("schema: counter %d, %d of later/log_v" % (n, later))
        if n < last:
            errors.append("went back: %d after %d" % (n, last))
        last = max(last, n)
    except sqlite3.OperationalError as e:
        if "no such table" in str(e) and last < 0:
            continue  # the replica is not bootstrapped yet
        errors.append("sqlite: %s" % e)
    except Exception as e:
        errors.append("%s: %s" % (type(e).__name__, e))
print("rounds=%d errors=%d max_n=%d" % (rounds, len(errors), last))
if vfs:
    print(vfs.execute("SELECT walsync_stats()").fetchone()[0])
for e in errors[:5]:
    print(e)
sys.exit(1 if errors else 0)
