#!/usr/bin/env python3
"""Forwarding: a single-server client pointed at one node of a 3-node
cluster sees one cache, exactly as it sees one memcached.

Starts the three nodes of nodes.NODES and memcached 1.6.45, then against
node 0 (127.0.0.2:11211) and against memcached, side by side:
  * memccapable -a and -b: the same results, test by test;
  * pymemcache's base Client: the same result for every call of a script
    over keys of every node (CAS values compared by whether they work);
  * pipelines: the same reply bytes for one write holding mixed classic,
    meta and binary-quiet requests over keys of every node (order kept).
Then checks that the keys really were spread: every node holds some, and
each key is held by the nodes `cluster owner` names (its owner and copy),
and by no other.

    tests/cluster/forwarding.py --corecache target/release/corecache --memcached PATH

Needs pymemcache (pip) and memccapable (Debian's libmemcached-tools).
"""
import argparse
import os
import re
import struct
import subprocess
import sys
import time

from pymemcache.client.base import Client

from nodes import Cluster, connect, metadump, preference_lists

REFERENCE = ("127.0.0.1", 21298)
KEYS = [f"fw:{i}" for i in range(60)]


def memccapable(host, port, mode):
    out = subprocess.run(["memccapable", "-h", host, "-p", str(port), mode],
                         capture_output=True, text=True, timeout=120).stdout
    return [" ".join(line.split()) for line in out.splitlines() if re.search(r"\[(pass|FAIL)\]$", line)]


def pymemcache_script(client):
    """Every call's result, CAS tokens replaced by whether they are ints."""
    results = []

    def record(name, value):
        results.append((name, value))

    client.flush_all()
    for i, key in enumerate(KEYS):
        record("set", client.set(key, f"v{i}", expire=0 if i % 3 else 300, noreply=False))
    record("get_many", client.get_many(KEYS))
    record("get_many_missing", client.get_many(["nope:1"] + KEYS[:5] + ["nope:2"]))
    for key in KEYS[:20]:
        record("add", client.add(key, b"x", noreply=False))
        record("add_new", client.add(key + ":new", b"x", noreply=False))
        record("replace", client.replace(key, b"r", noreply=False))
        record("replace_missing", client.replace(key + ":gone", b"r", noreply=False))
        record("append", client.append(key, b"+a", noreply=False))
        record("prepend", client.prepend(key, b"p+", noreply=False))
        value, cas = client.gets(key)
        record("gets", (value, isinstance(cas, bytes) and cas.isdigit()))
        record("cas_ok", client.cas(key, b"c1", cas, noreply=False))
        record("cas_stale", client.cas(key, b"c2", cas, noreply=False))
        record("get", client.get(key))
    for key in KEYS[20:40]:
        client.set(key, b"10", noreply=True)
        record("incr", client.incr(key, 5, noreply=False))
        record("decr", client.decr(key, 20, noreply=False))
        record("incr_missing", client.incr(key + ":none", 1, noreply=False))
        record("touch", client.touch(key, 100, noreply=False))
        record("touch_missing", client.touch(key + ":none", 100, noreply=False))
        record("delete", client.delete(key, noreply=False))
        record("delete_again", client.delete(key, noreply=False))
    record("gets_many", sorted((k, v[0]) for k, v in client.gets_many(KEYS).items()))
    record("flush_all", client.flush_all(noreply=False))
    record("after_flush", client.get_many(KEYS))
    return results


def text_pipeline():
    """One write of mixed classic and meta commands over every node's keys."""
    parts = []
    for i, key in enumerate(KEYS):
        k = key.encode()
        parts.append(b"set %s %d 0 %d\r\n%s\r\n" % (k, i, len(k), k))
        parts.append(b"set %s 0 0 1 noreply\r\nz\r\n" % (k + b":q"))
    parts.append(b"get " + b" ".join(k.encode() for k in KEYS) + b" missing\r\n")
    for i, key in enumerate(KEYS[:30]):
        k = key.encode()
        parts += [b"append %s 0 0 2\r\n!!\r\n" % k, b"incr %s 1\r\n" % k,
                  b"mg %s v f s k\r\n" % k, b"ms %s 2 T0 F3\r\nms\r\n" % (k + b":m"),
                  b"mg %s v q\r\n" % (k + b":none"), b"delete %s:q\r\n" % k, b"mn\r\n"]
    parts.append(b"get " + b" ".join(k.encode() + b":m" for k in KEYS[:30]) + b"\r\n")
    parts.append(b"md %s q\r\nmn\r\nquit\r\n" % KEYS[0].encode())
    return b"".join(parts)


def binary_pipeline():
    """setq for every key, getkq for each and a missing one, noop, quit."""
    def request(opcode, key, extras=b"", value=b"", opaque=0):
        body = extras + key + value
        return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0, len(body), opaque, 0) + body
    parts = []
    for i, key in enumerate(KEYS):
        k = key.encode()
        parts.append(request(0x11, k, struct.pack(">II", i, 0), b"b" + k, i))  # setq
    for i, key in enumerate(KEYS):
        parts.append(request(0x0D, key.encode(), opaque=1000 + i))  # getkq
        parts.append(request(0x0D, b"missing:" + key.encode(), opaque=2000 + i))
    parts.append(request(0x0A, b"", opaque=9999))  # noop
    parts.append(request(0x07, b""))  # quit
    return b"".join(parts)


def exchange(address, data, timeout=10):
    """Sends `data` (ending in a quit) in one write; everything until the close."""
    sock = connect(*address)
    sock.settimeout(timeout)
    sock.sendall(data)
    buf = b""
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
    sock.close()
    return buf


def binary_responses(data):
    """Binary response packets, each with its CAS zeroed (CAS values are
    per server; their presence is what is compared)."""
    packets = []
    while len(data) >= 24:
        total = 24 + struct.unpack(">I", data[8:12])[0]
        packet = data[:total]
        cas = struct.unpack(">Q", packet[16:24])[0]
        packets.append(packet[:16] + (b"CAS" if cas else b"---") + packet[24:])
        data = data[total:]
    return packets + ([data] if data else [])


def compare(name, ours, theirs, failures):
    if ours == theirs:
        print(f"{name}: same as memcached 1.6.45 ({len(ours)} results)")
        return
    failures.append(name)
    print(f"{name}: differs from memcached 1.6.45")
    for index, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            print(f"  first difference at {index}: corecache {a[:300]!r}, memcached {b[:300]!r}")
            break
    else:
        print(f"  lengths {len(ours)} and {len(theirs)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corecache", required=True)
    parser.add_argument("--memcached", required=True)
    args = parser.parse_args()
    root = ["-u", "root"] if os.geteuid() == 0 else []
    reference = subprocess.Popen([args.memcached, *root, "-U", "0", "-l", REFERENCE[0], "-p", str(REFERENCE[1])],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failures = []
    try:
        with Cluster(args.corecache) as cluster:
            connect(*REFERENCE).close()
            node = cluster.address(0)
            for mode in ("-a", "-b"):
                compare(f"memccapable {mode}", memccapable(*node, mode), memccapable(*REFERENCE, mode), failures)

            clients = [Client(address, connect_timeout=5, timeout=10) for address in (node, REFERENCE)]
            ours, theirs = (pymemcache_script(client) for client in clients)
            compare("pymemcache base Client", ours, theirs, failures)

            pipelines = [("text pipeline", text_pipeline(), lambda reply: reply.split(b"\r\n")),
                         ("binary pipeline", binary_pipeline(), binary_responses)]
            for name, data, units in pipelines:
                for address in (node, REFERENCE):
                    exchange(address, b"flush_all\r\nquit\r\n")
                ours, theirs = (units(exchange(address, data)) for address in (node, REFERENCE))
                compare(name, ours, theirs, failures)

            # The pipelines went over every node: each holds keys, each key on
            # its preference list alone (the copies trail by the replication lag).
            sock = connect(*node)
            names = cluster.names()
            lists = [sorted(names[i] for i in listed) for listed in preference_lists(sock, names, KEYS)]
            deadline = time.time() + 10
            while True:
                held = [metadump(*cluster.address(i)) for i in range(len(cluster.nodes))]
                misplaced = [k for k, listed in zip(KEYS, lists)
                             if sorted(n for n, h in zip(names, held) if k in h) != listed]
                if not misplaced or time.time() > deadline:
                    break
                time.sleep(0.1)
            spread = [sum(1 for k in KEYS if k in h) for h in held]
            print(f"keys held per node after the binary pipeline: {spread}; misplaced: {len(misplaced)}")
            if misplaced or min(spread) == 0:
                failures.append("placement")
                print(f"  misplaced: {misplaced[:5]}")
    finally:
        reference.kill()
        reference.wait()
    if failures:
        print("FAILED: " + ", ".join(failures))
        return 1
    print("forwarding: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
