#!/usr/bin/env python3
"""Write a WAL-mode database and capture its files mid-flight.

usage: capture-wal.py DIR
Leaves in DIR: pre.db (the database before the WAL), cap.db + cap.db-wal
(a copy taken while a transaction is still open), where the WAL holds several
committed transactions, one rolled back after spilling, and an uncommitted
tail that spilled into the WAL.
"""
import os, shutil, sqlite3, sys

d = sys.argv[1]
db = os.path.join(d, "live.db")
a = sqlite3.connect(db, isolation_level=None)
a.execute("pragma journal_mode=wal")
a.execute("pragma wal_autocheckpoint=0")
a.execute("create table t(id integer primary key, v text, b blob)")
a.execute("insert into t(v, b) select 'row' || value, randomblob(300) from generate_series(1, 200)"
          if False else "insert into t(v, b) values ('seed', randomblob(300))")
for i in range(200):
    a.execute("insert into t(v, b) values (?, randomblob(300))", ("r%d" % i,))
a.execute("pragma wal_checkpoint(truncate)")
shutil.copyfile(db, os.path.join(d, "pre.db"))

# committed transactions of several sizes
a.execute("begin")
for i in range(50):
    a.execute("insert into t(v, b) values (?, randomblob(500))", ("a%d" % i,))
a.execute("commit")
a.execute("update t set v = v || '!' where id % 7 = 0")
a.execute("delete from t where id % 11 = 0")
# a rolled-back transaction that spills frames into the WAL
b = sqlite3.connect(db, isolation_level=None)
b.execute("pragma cache_size=2")
b.execute("begin")
for i in range(400):
    b.execute("insert into t(v, b) values (?, randomblob(1000))", ("x%d" % i,))
b.execute("rollback")
a.execute("insert into t(v, b) values ('after-rollback', randomblob(100))")
# an uncommitted tail: spilled frames with no commit frame, copied while open
b.execute("begin")
for i in range(300):
    b.execute("insert into t(v, b) values (?, randomblob(1000))", ("y%d" % i,))
shutil.copyfile(db, os.path.join(d, "cap.db"))
shutil.copyfile(db + "-wal", os.path.join(d, "cap.db-wal"))
b.execute("rollback")
b.close()
a.close()
