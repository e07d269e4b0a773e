#!/usr/bin/env python3
"""Torture writer for wal-tail: mixed transactions and random checkpoints.

usage: wal-tail-writer.py DB NTXNS SEED LATENCY_OUT
Writes commit latencies (seconds, one a line) to LATENCY_OUT.
"""
import random, sqlite3, sys, time

db, n, seed, lat_out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
c = sqlite3.connect(db, timeout=30, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA wal_autocheckpoint=%d" % rng.choice([8, 16, 50]))
c.execute("CREATE TABLE IF NOT EXISTS t1(id INTEGER PRIMARY KEY, v BLOB)")
c.execute("CREATE TABLE IF NOT EXISTS t2(id INTEGER PRIMARY KEY, v BLOB)")
lat = []
big_at = n // 3
drop_at = n // 2
modes = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"]


def txn(f):
    t0 = time.perf_counter()
    c.execute("BEGIN IMMEDIATE")
    f()
    c.execute("COMMIT")
    lat.append(time.perf_counter() - t0)


for i in range(n):
    r = rng.random()
    tbl = rng.choice(["t1", "t2"])
    if i == big_at:  # larger than the WAL threshold (1000 pages)
        txn(lambda: c.executemany("INSERT INTO t1(v) VALUES(randomblob(?))",
                                  [(4000,) for _ in range(1500)]))
    elif i == drop_at:
        c.execute("DROP TABLE t2")
        c.execute("VACUUM")  # the file shrinks
        c.execute("CREATE TABLE t2(id INTEGER PRIMARY KEY, v BLOB)")
    elif r < 0.55:
        rows = [(rng.randint(10, 3000),) for _ in range(rng.randint(1, 20))]
        txn(lambda: c.executemany("INSERT INTO %s(v) VALUES(randomblob(?))" % tbl, rows))
    elif r < 0.75:
        txn(lambda: c.execute("UPDATE %s SET v=randomblob(?) WHERE id %% ? = 0" % tbl,
                              (rng.randint(10, 2000), rng.randint(3, 40))))
    elif r < 0.90:
        txn(lambda: c.execute("DELETE FROM %s WHERE id %% ? = 0" % tbl, (rng.randint(5, 50),)))
    elif r < 0.98:
        c.execute("PRAGMA wal_checkpoint(%s)" % rng.choice(modes))
    elif r < 0.99:
        c.execute("VACUUM")
    else:
        time.sleep(rng.random() * 0.05)
c.close()
with open(lat_out, "w") as f:
    f.write("\n".join("%.6f" % x for x in lat) + "\n")
