#!/usr/bin/env python3
"""Copies: after a bounded write load, every key is held by exactly the
members of its preference list (`cluster owner`), each copy with the
owner's flags, CAS, expiry and size.

Starts the three nodes of nodes.NODES, then sends a seeded mix of sets
(with flags and TTLs), appends, incrs, deletes and touches, pipelined, to
every node (each forwards what it does not act for). Then it reads every
node's metadump until the copies agree (they trail the owner by the
replication lag) or a deadline passes, and checks each key against the
ring. Values are compared by size here; tests/cluster/failover.py reads
the copies' values after their owner is killed.

    tests/cluster/copies.py --corecache target/release/corecache
"""
import argparse
import random
import sys
import time

from nodes import Cluster, connect, metadump, preference_lists

KEYS = 400
OPS = 4000
BATCH = 50
SETTLE = 15.0
# The fields a copy shares with its owner's item (la and fetch are the node's own).
SHARED = ("exp", "cas", "flags", "size", "cls")


def command(rng, key):
    """One write and the line that ends its reply."""
    kind = rng.choice(["set", "set", "set", "append", "incr", "delete", "touch"])
    if kind == "set":
        value = str(rng.randrange(10 ** rng.randrange(1, 8)))
        ttl = rng.choice([0, 0, 1000, 5000])
        flags = rng.randrange(1 << 32)
        return f"set {key} {flags} {ttl} {len(value)}\r\n{value}\r\n"
    if kind == "append":
        return f"append {key} 0 0 2\r\n77\r\n"
    if kind == "incr":
        return f"incr {key} {rng.randrange(1, 100)}\r\n"
    if kind == "delete":
        return f"delete {key}\r\n"
    return f"touch {key} {rng.choice([0, 2000, 9000])}\r\n"


def load(cluster, seed):
    rng = random.Random(seed)
    socks = [connect(*cluster.address(i)) for i in range(len(cluster.nodes))]
    keys = [f"copy{i}" for i in range(KEYS)]
    for _ in range(OPS // BATCH):
        sock = rng.choice(socks)
        lines = [command(rng, rng.choice(keys)).encode() for _ in range(BATCH)]
        # Every reply here is one line; "mn" marks the end of the batch.
        sock.sendall(b"".join(lines) + b"mn\r\n")
        buf = b""
        while not buf.endswith(b"MN\r\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("connection closed")
            buf += chunk
        assert b"ERROR" not in buf, buf
    for sock in socks:
        sock.close()
    return keys


def check(cluster, keys):
    """The problems found: (key, what is wrong)."""
    names = cluster.names()
    sock = connect(*cluster.address(0))
    lists = preference_lists(sock, names, keys)
    sock.close()
    held = [metadump(*cluster.address(i)) for i in range(len(names))]
    problems = []
    for key, listed in zip(keys, lists):
        owner = listed[0]
        holders = {i for i in range(len(names)) if key in held[i]}
        if key not in held[owner]:
            if holders:
                problems.append((key, f"deleted on its owner {owner} but held by {sorted(holders)}"))
            continue
        if holders != set(listed):
            problems.append((key, f"held by {sorted(holders)}, preference list {listed}"))
            continue
        mine = {field: held[owner][key][field] for field in SHARED}
        for copy in listed[1:]:
            theirs = {field: held[copy][key][field] for field in SHARED}
            if theirs != mine:
                problems.append((key, f"copy on {copy} {theirs} differs from owner {owner} {mine}"))
    return problems, [len(h) for h in held]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corecache", required=True)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    with Cluster(args.corecache) as cluster:
        started = time.time()
        keys = load(cluster, args.seed)
        loaded = time.time()
        deadline = loaded + SETTLE
        while True:
            problems, counts = check(cluster, keys)
            if not problems or time.time() > deadline:
                break
            time.sleep(0.2)
        print(f"{OPS} writes over {KEYS} keys in {loaded - started:.2f} s; "
              f"copies agreed {time.time() - loaded:.2f} s later; items per node {counts}")
        for key, problem in problems[:20]:
            print(f"  {key}: {problem}")
        if problems:
            print(f"FAIL: {len(problems)} keys")
            return 1
        live = sum(1 for key in keys if key in metadump(*cluster.address(0)))
        print(f"ok: every key on exactly its preference list with its owner's fields "
              f"({live} live keys held by node 0)")
        return 0


if __name__ == "__main__":
    sys.exit(main())
