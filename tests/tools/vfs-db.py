#!/usr/bin/env python3
"""A WAL-mode database written in rounds, each round's -wal kept.

usage: vfs-db.py DIR ROUNDS PAGE_SIZE
Leaves in DIR: base.db (checkpointed start) and wal.NNN (the -wal of round
NNN, copied while the writer holds the database with autocheckpoint off).
Table t has an index on v and rows whose blobs overflow onto overflow pages
at every page size; rounds insert, update, delete and now and then VACUUM
(shrinking Commit), so the chain of LTX files ltx-encode makes from them has
growing and shrinking databases, for the walsync VFS tests.
"""
import os, random, shutil, sqlite3, sys

d, rounds, ps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(18)
db = os.path.join(d, "live.db")
a = sqlite3.connect(db, isolation_level=None)
a.execute("pragma page_size=%d" % ps)
a.execute("pragma journal_mode=wal")
a.execute("pragma wal_autocheckpoint=0")
a.execute("create table t(id integer primary key, v text, b blob)")
a.execute("create index t_v on t(v)")
a.execute("create table kv(k text primary key, n integer) without rowid")
for i in range(200):
    a.execute("insert into t(v, b) values (?, randomblob(?))", ("seed%04d" % i, rng.randint(10, 3 * ps)))
a.execute("pragma wal_checkpoint(truncate)")
shutil.copyfile(db, os.path.join(d, "base.db"))
for r in range(1, rounds + 1):
    k = r % 5
    a.execute("begin")
    if k == 0:
        a.execute("delete from t where id % 4 = 0")
        a.execute("commit")
        a.execute("vacuum")
    else:
        for i in range(rng.randint(5, 40)):
            a.execute("insert into t(v, b) values (?, randomblob(?))", ("r%03d-%02d" % (r, i), rng.randint(1, 2 * ps)))
        a.execute("update t set v = v || ? where id % ? = 0", (str(r), rng.randint(3, 9)))
        a.execute("insert or replace into kv values (?, ?)", ("round", r))
        a.execute("commit")
    shutil.copyfile(db + "-wal", os.path.join(d, "wal.%03d" % r))
    a.execute("pragma wal_checkpoint(truncate)")
a.close()
