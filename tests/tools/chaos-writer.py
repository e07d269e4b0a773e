#!/usr/bin/env python3
"""Writer for the chaos test: keeps a connection open (so the WAL survives
pipeline restarts), commits small and large transactions on a monotone
counter, and records the last counter it saw committed.

usage: chaos-writer.py DB SECONDS COMMITTED_FILE
"""
import os, random, sqlite3, sys, time

db, seconds, committed = sys.argv[1], float(sys.argv[2]), sys.argv[3]
c = sqlite3.connect(db, isolation_level=None, timeout=30)
c.execute("pragma journal_mode=wal")
c.execute("create table if not exists counter(n integer primary key, at real, pad blob)")
c.execute("create table if not exists log(n integer primary key, note text)")
rnd = random.Random(int(os.environ.get("SEED", "1")))
n = (c.execute("select max(n) from counter").fetchone()[0] or 0)
end = time.time() + seconds
while time.time() < end:
    n += 1
    big = rnd.random() < 0.02
    c.execute("begin")
    c.execute("insert into counter values (?, ?, randomblob(?))", (n, time.time(), 200000 if big else 100))
    c.execute("insert into log values (?, ?)", (n, "txn %d" % n))
    if rnd.random() < 0.05:
        c.execute("delete from log where n < ?", (n - 500,))
    c.execute("commit")
    with open(committed + ".tmp", "w") as f:
        f.write("%d\n" % n)
    os.replace(committed + ".tmp", committed)
    time.sleep(rnd.random() * 0.01)
c.close()
