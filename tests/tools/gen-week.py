#!/usr/bin/env python3
"""A simulated week of writes for compaction and retention tests.

usage: gen-week.py DIR DAYS
From 2024-01-01T00:00:00Z, on each of DAYS days, in hours 06..23, at minutes
0, 2 and 30, seconds 0 and 10: one round of writes (6 rounds an hour; nights
idle). Leaves in DIR: base.db (TXID 1, at 00:00:00), wal/N (the -wal of
round N = TXID N, copied while the writer holds the database, then
checkpointed away) and points: "N EPOCH SHA256" a line, the database bytes
after TXID N and the time stamped on it.
"""
import hashlib, os, random, shutil, sqlite3, sys

d, days = sys.argv[1], int(sys.argv[2])
T0 = 1704067200  # 2024-01-01T00:00:00Z
rng = random.Random(7)
os.makedirs(os.path.join(d, "wal"), exist_ok=True)
db = os.path.join(d, "live.db")
a = sqlite3.connect(db, isolation_level=None)
a.execute("pragma page_size=1024")
a.execute("pragma journal_mode=wal")
a.execute("pragma wal_autocheckpoint=0")
a.execute("pragma synchronous=off")
a.execute("create table t(id integer primary key, v text, b blob)")
for i in range(200):
    a.execute("insert into t(v, b) values (?, randomblob(300))", ("seed%d" % i,))
a.execute("pragma wal_checkpoint(truncate)")
shutil.copyfile(db, os.path.join(d, "base.db"))

def sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()

points = open(os.path.join(d, "points"), "w")
points.write("1 %d %s\n" % (T0, sha(db)))
n = 1
for day in range(days):
    for hour in range(6, 24):
        for minute in (0, 2, 30):
            for sec in (0, 10):
                n += 1
                t = T0 + day * 86400 + hour * 3600 + minute * 60 + sec
                a.execute("begin")
                a.execute("update t set v = ? where id % 97 = ?", ("r%d" % n, n % 97))
                for _ in range(rng.randint(1, 4)):
                    a.execute("insert into t(v, b) values (?, randomblob(?))", ("n%d" % n, rng.randint(50, 1500)))
                if n % 11 == 0:
                    a.execute("delete from t where id in (select id from t order by random() limit 5)")
                a.execute("commit")
                shutil.copyfile(db + "-wal", os.path.join(d, "wal", str(n)))
                a.execute("pragma wal_checkpoint(truncate)")
                points.write("%d %d %s\n" % (n, t, sha(db)))
points.close()
