#!/usr/bin/env python3
"""Placement: the cluster places every key where ketama clients do.

Starts three corecache nodes on 127.0.0.2-4 (one on port 11211, unequal
weights, mixed -t 1 / -t 2), then for 10,000 keys checks that `cluster owner`
names the node that uhashring (hash_fn='ketama') picks and the node that
twemproxy (nutcracker, hash: md5, distribution: ketama) sends the key to
(the node it reached is the one that forwarded it, if any did: `stats
cluster` forwarded_out).

    tests/cluster/placement.py --corecache target/release/corecache [--keys N]

Needs uhashring (pip) and nutcracker (Debian); .ci/run installs both.
"""
import argparse
import sys

from uhashring import HashRing

from nodes import NODES, Cluster, Twemproxy, ask_all, connect

PROXY = ("127.0.0.5", 21299)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corecache", required=True)
    parser.add_argument("--keys", type=int, default=10000)
    args = parser.parse_args()
    address = [f"{h}:{p}" for h, p, _, _ in NODES]
    with Cluster(args.corecache) as cluster, Twemproxy(cluster, PROXY):
        return check(args.keys, address)


def forwarded_out(socks):
    """Each node's count of key operations it forwarded to another node."""
    counts = []
    for sock in socks:
        (reply,) = ask_all(sock, [b"stats cluster\r\n"])
        stats = dict(line.split()[1:3] for line in reply.decode().splitlines() if line.startswith("STAT "))
        counts.append(int(stats["forwarded_out"]))
    return counts


def check(count, address):
    keys = [f"key:{i}" for i in range(count)]

    # The cluster's answer, from one node (every node holds the same list).
    first = connect(*NODES[0][:2])
    owners = []
    for reply in ask_all(first, [f"cluster owner {k}\r\n".encode() for k in keys]):
        lines = reply.decode().split("\r\n")
        if not lines[0].startswith("OWNER "):
            raise SystemExit(f"unexpected cluster owner reply: {reply!r}")
        owners.append(lines[0].split()[1])

    # uhashring: a node on port 11211 is named by its host, as libmemcached does.
    names = [h if p == 11211 else f"{h}:{p}" for h, p, _, _ in NODES]
    ring = HashRing({n: {"weight": w} for n, (_, _, w, _) in zip(names, NODES)}, hash_fn="ketama")
    uhash = [address[names.index(ring.get_node(k))] for k in keys]

    # twemproxy: store every key through it. Any node answers any key, so
    # where twemproxy sent a key shows in whether that node forwarded it: a
    # key sent to its owner is not forwarded. Batches of keys that nobody
    # forwarded all went to their owners; a batch with forwards is sent
    # again a key at a time to name the node each such key reached.
    client = connect(*PROXY)
    socks = [connect(host, port) for host, port, _, _ in NODES]

    def through_proxy(batch):
        before = forwarded_out(socks)
        replies = ask_all(client, [f"set {k} 0 0 1\r\nx\r\n".encode() for k in batch], b"\r\n")
        bad = [r for r in replies if r != b"STORED"]
        if bad:
            raise SystemExit(f"twemproxy set failed: {bad[:3]}")
        after = forwarded_out(socks)
        return [name for name, b, a in zip(address, before, after) if a != b]

    twem = []
    for at in range(0, len(keys), 200):
        batch = list(zip(keys[at:at + 200], owners[at:at + 200]))
        if not through_proxy([k for k, _ in batch]):
            twem.extend(owner for _, owner in batch)
            continue
        for k, owner in batch:
            moved = through_proxy([k])
            twem.append(moved[0] if moved else owner)

    differ = {"uhashring": [], "twemproxy": []}
    for k, owner, u, t in zip(keys, owners, uhash, twem):
        if u != owner:
            differ["uhashring"].append((k, owner, u))
        if t != owner:
            differ["twemproxy"].append((k, owner, f"{t} (forwarded it)"))
    share = {name: owners.count(name) for name in address}
    print(f"{len(keys)} keys; owners per node: {share}")
    for who, rows in differ.items():
        print(f"{who}: {len(keys) - len(rows)} of {len(keys)} agree with cluster owner")
        for k, owner, other in rows[:5]:
            print(f"  {k}: cluster owner {owner}, {who} {other}")
    return 1 if any(differ.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
