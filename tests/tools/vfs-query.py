#!/usr/bin/env python3
"""Query a database through the walsync VFS from Python's sqlite3 module.

usage: vfs-query.py SO URI SQL...
Loads the extension SO, opens URI (file:NAME?vfs=walsync&replica=...) and
prints each statement's rows, one line a row, columns joined by '|'.

Python builds without enable_load_extension (pyenv's default) load it with
a connection of their own libsqlite3 through ctypes: the VFS is registered
in the process's SQLite, which sqlite3.connect then uses.
"""
import ctypes, sqlite3, sys


def load(so):
    c = sqlite3.connect(":memory:")
    if hasattr(c, "enable_load_extension"):
        c.enable_load_extension(True)
        c.load_extension(so)
        return
    lib = ctypes.CDLL("libsqlite3.so.0")
    db = ctypes.c_void_p()
    if lib.sqlite3_open(b":memory:", ctypes.byref(db)) != 0:
        sys.exit("vfs-query: sqlite3_open failed")
    lib.sqlite3_enable_load_extension(db, 1)
    err = ctypes.c_char_p()
    if lib.sqlite3_load_extension(db, so.encode(), None, ctypes.byref(err)) != 0:
        sys.exit("vfs-query: load %s: %s" % (so, err.value.decode() if err.value else "?"))


def main():
    so, uri, stmts = sys.argv[1], sys.argv[2], sys.argv[3:]
    load(so)
    c = sqlite3.connect(uri, uri=True, isolation_level=None)
    for s in stmts:
        for row in c.execute(s):
            print("|".join("" if v is None else str(v) for v in row))


if __name__ == "__main__":
    main()
