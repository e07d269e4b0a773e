#!/usr/bin/env python3
"""Write a WAL-mode database through many rounds and keep each round's -wal.

usage: gen-chain.py DIR ROUNDS
Leaves in DIR: base.db (checkpointed start), wal.NNN (the -wal of round NNN,
copied while the writer still holds the database open with autocheckpoint
off), and final.db (the database after the last round, checkpointed).
Rounds insert, update, delete, grow with blobs and now and then VACUUM, so
the chain has growing and shrinking Commits.
"""
import os, random, shutil, sqlite3, sys

d, rounds = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
db = os.path.join(d, "live.db")
a = sqlite3.connect(db, isolation_level=None)
a.execute("pragma page_size=1024")
a.execute("pragma journal_mode=wal")
a.execute("pragma wal_autocheckpoint=0")
a.execute("create table t(id integer primary key, v text, b blob)")
for i in range(100):
    a.execute("insert into t(v, b) values (?, randomblob(200))", ("seed%d" % i,))
a.execute("pragma wal_checkpoint(truncate)")
shutil.copyfile(db, os.path.join(d, "base.db"))
for r in range(1, rounds + 1):
    k = r % 7
    if k == 0:
        a.execute("delete from t where id % 3 = 0")
        a.execute("vacuum")  # shrink
    elif k == 3:
        a.execute("begin")
        for i in range(rng.randint(20, 60)):
            a.execute("insert into t(v, b) values (?, randomblob(?))", ("g%d-%d" % (r, i), rng.randint(100, 3000)))
        a.execute("commit")
    else:
        a.execute("update t set v = v || ? where id % ? = 0", (str(r), rng.randint(2, 9)))
        a.execute("insert into t(v, b) values (?, randomblob(?))", ("r%d" % r, rng.randint(10, 900)))
        if k == 5:
            a.execute("delete from t where id % 5 = ?", (r % 5,))
    shutil.copyfile(db + "-wal", os.path.join(d, "wal.%03d" % r))
    a.execute("pragma wal_checkpoint(truncate)")
shutil.copyfile(db, os.path.join(d, "final.db"))
a.close()
