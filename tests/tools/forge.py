#!/usr/bin/env python3
"""Forge small hostile inputs for the bounds tests (issue 12).

usage:
  forge.py ltx OUT [ps=N] [commit=N] [min=N] [max=N] [flags=N] [pre=HEX] [post=HEX]
               [page=PGNO:BYTE ...]
      A complete LTX v3 file (page index, file checksum) with the given
      header fields; each page is PGNO filled with BYTE, stored as a
      literal-only LZ4 block. Defaults: ps=512 commit=1 min=max=2 flags=0,
      pre=8000000000000001, post=8000000000000001.
  forge.py wal-commit IN OUT FRAME SIZE
      Copy of the -wal file IN whose frame FRAME (1-based) has commit size
      SIZE, with the checksum chain recomputed from that frame on.
  forge.py walstream IN OUT [REPEAT_H]
      The WAL stream (man/walstream.5) of the -wal file IN: REPEAT_H header
      records (default 1), a position, then every frame. Record hashes come
      from `xxhsum -H3`.
"""
import struct, subprocess, sys

# ---- CRC-64/GO-ISO and the LTX page checksum (man/ltx.5)
POLY = 0xD800000000000000
TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)


class Crc:
    def __init__(self):
        self.c = 0xFFFFFFFFFFFFFFFF

    def update(self, b):
        c, t = self.c, TABLE
        for x in b:
            c = t[(c ^ x) & 0xFF] ^ (c >> 8)
        self.c = c

    def value(self):
        return self.c ^ 0xFFFFFFFFFFFFFFFF


def uvarint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def lz4_literals(data):
    """One LZ4 block holding data as a single literal run."""
    n = len(data)
    if n < 15:
        return bytes([n << 4]) + data
    out = bytearray([0xF0])
    rest = n - 15
    while rest >= 255:
        out.append(255)
        rest -= 255
    out.append(rest)
    return bytes(out) + data


def forge_ltx(out, args):
    f = dict(ps="512", commit="1", min="2", max="2", flags="0",
             pre="8000000000000001", post="8000000000000001")
    pages = []
    for a in args:
        k, v = a.split("=", 1)
        if k == "page":
            p, b = v.split(":")
            pages.append((int(p, 0), int(b, 0)))
        else:
            f[k] = v
    ps, commit = int(f["ps"], 0), int(f["commit"], 0)
    hdr = b"LTX1" + struct.pack(">IIIQQqQqqIIQ", int(f["flags"], 0), ps, commit, int(f["min"], 0),
                                int(f["max"], 0), 1700000000000, int(f["pre"], 16), 0, 0, 0, 0, 0)
    hdr += b"\0" * (100 - len(hdr))
    crc = Crc()
    body = bytearray(hdr)
    crc.update(hdr)
    index = bytearray()
    for pgno, byte in pages:
        page = bytes([byte]) * ps
        blk = lz4_literals(page)
        ph = struct.pack(">IHI", pgno, 1, len(blk))
        start = len(body)
        body += ph + blk
        crc.update(ph)
        crc.update(page)
        index += uvarint(pgno) + uvarint(start) + uvarint(10 + len(blk))
    end = b"\0" * 6
    body += end
    crc.update(end)
    index += b"\0"
    tail = bytes(index) + struct.pack(">Q", len(index)) + struct.pack(">Q", int(f["post"], 16))
    body += tail
    crc.update(tail)
    body += struct.pack(">Q", (1 << 63) | crc.value())
    open(out, "wb").write(body)


# ---- SQLite WAL
def wal_checksum(be, data, s1, s2):
    fmt = (">" if be else "<") + "%dI" % (len(data) // 4)
    w = struct.unpack(fmt, data)
    for i in range(0, len(w), 2):
        s1 = (s1 + w[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + w[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def read_wal(path):
    b = bytearray(open(path, "rb").read())
    magic, _, ps = struct.unpack(">III", b[:12])
    return b, magic & 1 == 1, ps


def forge_wal_commit(inp, out, frame, size):
    b, be, ps = read_wal(inp)
    fs = 24 + ps
    s1, s2 = struct.unpack(">II", b[24:32])
    n = (len(b) - 32) // fs
    for i in range(1, n + 1):
        off = 32 + (i - 1) * fs
        if i == frame:
            b[off + 4:off + 8] = struct.pack(">I", size)
        if i >= frame:
            s1, s2 = wal_checksum(be, bytes(b[off:off + 8]) + bytes(b[off + 24:off + fs]), s1, s2)
            b[off + 16:off + 24] = struct.pack(">II", s1, s2)
        else:
            s1, s2 = struct.unpack(">II", b[off + 16:off + 24])
    open(out, "wb").write(b)


def record(t, body):
    head = bytes([ord(t)]) + struct.pack(">I", len(body))
    h = subprocess.run(["xxhsum", "-H3", "-"], input=head + body, stdout=subprocess.PIPE,
                       check=True).stdout.split()
    digest = next(x for x in reversed(h) if len(x) == 16)
    return head + body + bytes.fromhex(digest.decode())


def forge_walstream(inp, out, repeat_h):
    b, be, ps = read_wal(inp)
    fs = 24 + ps
    hrec = record("H", b"WSTR" + struct.pack(">III", 1, ps, 0))
    salt1, salt2 = struct.unpack(">II", b[16:24])
    seq = struct.unpack(">I", b[12:16])[0]
    ck1, ck2 = struct.unpack(">II", b[24:32])
    s = bytearray(hrec * repeat_h)
    s += record("G", struct.pack(">IIIIIII", salt1, salt2, seq, 0, ck1, ck2, 1 if be else 0))
    n = (len(b) - 32) // fs
    for i in range(1, n + 1):
        off = 32 + (i - 1) * fs
        if struct.unpack(">II", b[off + 8:off + 16]) != (salt1, salt2):
            break
        s += record("F", struct.pack(">IQ", i, 1700000000000 + i) + bytes(b[off:off + fs]))
    open(out, "wb").write(s)


def main():
    cmd, out = sys.argv[1], sys.argv[2]
    if cmd == "ltx":
        forge_ltx(out, sys.argv[3:])
    elif cmd == "wal-commit":
        forge_wal_commit(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5], 0))
    elif cmd == "walstream":
        forge_walstream(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    else:
        sys.exit("forge.py: unknown command " + cmd)


if __name__ == "__main__":
    main()
