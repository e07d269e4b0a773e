#!/usr/bin/env python3
"""Primary workload for the ltx-apply --live tests.

usage: live-writer.py DB NTXNS [RATE]
Every transaction bumps counter.n by one and inserts log row n, so a reader
can check any state it sees: count(log) == max(log.n) == counter.n. Every
700th transaction (at n % 700 == 350) also inserts 400 rows of 1 KiB into big;
at n == NTXNS // 2 the schema changes (new table, index, column).
RATE: transactions a second (0: as fast as possible).
"""
import sqlite3, sys, time

db, n = sys.argv[1], int(sys.argv[2])
rate = float(sys.argv[3]) if len(sys.argv) > 3 else 0
c = sqlite3.connect(db, timeout=30, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA synchronous=NORMAL")
c.execute("CREATE TABLE IF NOT EXISTS counter(id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER)")
c.execute("CREATE TABLE IF NOT EXISTS log(n INTEGER PRIMARY KEY, v BLOB)")
c.execute("CREATE TABLE IF NOT EXISTS big(id INTEGER PRIMARY KEY, n INTEGER, v BLOB)")
c.execute("INSERT OR IGNORE INTO counter VALUES(1, 0)")
start = c.execute("SELECT n FROM counter").fetchone()[0]
t0 = time.time()
for k in range(start + 1, n + 1):
    c.execute("BEGIN IMMEDIATE")
    c.execute("UPDATE counter SET n = ?", (k,))
    c.execute("INSERT INTO log(n, v) VALUES(?, randomblob(64))", (k,))
    if k % 700 == 350:
        c.executemany("INSERT INTO big(n, v) VALUES(?, randomblob(1024))", [(k,)] * 400)
    if k == n // 2:
        c.execute("CREATE TABLE later(x)")
        c.execute("INSERT INTO later VALUES(?)", (k,))
        c.execute("CREATE INDEX log_v ON log(v)")
        c.execute("ALTER TABLE log ADD COLUMN w DEFAULT 7")
    c.execute("COMMIT")
    if rate > 0:
        delay = t0 + (k - start) / rate - time.time()
        if delay > 0:
            time.sleep(delay)
