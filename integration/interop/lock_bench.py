#!/usr/bin/env python3
"""LOCK + PUT + UNLOCK of many small files over several clients, as an
editor saving files on a mounted share does. Prints files/s.

    lock_bench.py URL [--files 1000] [--clients 8] [--size 4096]

URL is a writable collection (ending in /); a fresh sub-collection is made.
A failed request is counted (failed_requests) and the run goes on.
"""
import argparse, http.client, os, re, sys, threading, time, urllib.parse, uuid

LOCKINFO = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
            b'<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>'
            b'<D:owner>lock_bench</D:owner></D:lockinfo>')

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--size", type=int, default=4096)
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url if a.url.endswith("/") else a.url + "/")
    base = u.path + "lockbench-" + uuid.uuid4().hex[:8] + "/"
    conn = http.client.HTTPConnection(u.hostname, u.port)
    conn.request("MKCOL", base); r = conn.getresponse(); r.read()
    if r.status != 201:
        sys.exit(f"MKCOL {base}: {r.status}")
    body = os.urandom(a.size)
    errors = []
    done = []
    def worker(k):
        c = http.client.HTTPConnection(u.hostname, u.port)
        def call(method, path, body=None, headers={}):
            c.request(method, path, body, headers)
            r = c.getresponse(); r.read()
            return r
        for i in range(k, a.files, a.clients):
            path = f"{base}f{i:05d}"
            r = call("LOCK", path, LOCKINFO, {"Content-Type": "application/xml", "Timeout": "Second-60"})
            tok = r.getheader("Lock-Token")
            if r.status not in (200, 201) or not tok:
                errors.append(f"LOCK {path}: {r.status}"); continue
            ok = True
            r = call("PUT", path, body, {"If": f"({tok})"})
            if r.status not in (201, 204):
                errors.append(f"PUT {path}: {r.status}"); ok = False
            r = call("UNLOCK", path, headers={"Lock-Token": tok})
            if r.status != 204:
                errors.append(f"UNLOCK {path}: {r.status}"); ok = False
            if ok:
                done.append(path)
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(a.clients)]
    for t in ts: t.start()
    for t in ts: t.join()
    dt = time.monotonic() - t0
    print(f"RESULT metric=lock_put_unlock_files_per_s value={a.files / dt:.0f} files={a.files} "
          f"clients={a.clients} seconds={dt:.2f} failed_requests={len(errors)}")
    print(f"RESULT metric=lock_put_unlock_ok_files_per_s value={len(done) / dt:.0f} "
          f"(files whose LOCK, PUT and UNLOCK all succeeded)")
    if errors:
        print("NOTE first failures: " + "; ".join(errors[:3]))

main()
