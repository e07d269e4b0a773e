#!/usr/bin/env python3
"""Runs the age test vectors (tests/data/age) through `s3-get --raw` with
--age-identity / --age-passphrase-file on a file:// store, and checks each
outcome: the exit status for the expected failure kind, and the SHA-256 of
the plaintext released on stdout (for `success` and `payload failure`).

usage: age-vectors.py VECTOR_DIR WORK_DIR   (s3-get on PATH)
Prints one line per mismatch and "N vectors: K ok"; exits 1 on a mismatch."""
import hashlib
import os
import subprocess
import sys
import zlib

# expect -> exit status of s3-get
STATUS = {"success": 0, "no match": 1, "HMAC failure": 3, "header failure": 3, "payload failure": 3}


def main():
    vdir, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    bad = 0
    names = sorted(os.listdir(vdir))
    names = [n for n in names if not n.endswith(".md")]
    for name in names:
        raw = open(os.path.join(vdir, name), "rb").read()
        head, body = raw.split(b"\n\n", 1)
        meta = {}
        ids, passes = [], []
        for line in head.decode().split("\n"):
            k, v = line.split(": ", 1)
            if k == "identity":
                ids.append(v)
            elif k == "passphrase":
                passes.append(v)
            else:
                meta[k] = v
        if meta.get("compressed") == "zlib":
            body = zlib.decompress(body)
        obj = os.path.join(work, name + ".age")
        with open(obj, "wb") as f:
            f.write(body)
        args = ["s3-get", "--raw"]
        if not ids and not passes:  # still read it as an age file, with some key
            ids.append(subprocess.run(["age-keygen"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      check=True).stdout.decode().split("\n")[2])
        if ids:
            kf = os.path.join(work, name + ".key")
            with open(kf, "w") as f:
                f.write("\n".join(ids) + "\n")
            args += ["--age-identity", kf]
        if passes:
            pf = os.path.join(work, name + ".pass")
            with open(pf, "w") as f:
                f.write(passes[0] + "\n")
            args += ["--age-passphrase-file", pf]
        args.append("file://" + obj)
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        want = STATUS[meta["expect"]]
        err = p.stderr.decode(errors="replace").strip()
        problems = []
        if p.returncode != want:
            problems.append("exit %d, want %d (%s)" % (p.returncode, want, err))
        if "payload" in meta and meta["expect"] in ("success", "payload failure"):
            got = hashlib.sha256(p.stdout).hexdigest()
            if got != meta["payload"]:
                problems.append("plaintext sha256 %s, want %s" % (got, meta["payload"]))
        if p.returncode != 0 and err.count("\n") != 0:
            problems.append("more than one line on stderr: %r" % err)
        if problems:
            bad += 1
            print("%s (%s): %s" % (name, meta["expect"], "; ".join(problems)))
    print("%d vectors: %d ok" % (len(names), len(names) - bad))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
