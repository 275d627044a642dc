#!/usr/bin/env python3
"""Placement: the cluster places every key where ketama clients do.

Starts three corecache nodes on 127.0.0.2-4 (one on port 11211, unequal
weights, mixed -t 1 / -t 2), then for 10,000 keys checks that `cluster owner`
names the node that uhashring (hash_fn='ketama') picks and the node that
twemproxy (nutcracker, hash: md5, distribution: ketama) sends the key to.

    tests/cluster/placement.py --corecache target/debug/corecache [--keys N]

Needs uhashring (pip) and nutcracker (Debian); .ci/run installs both.
"""
import argparse
import os
import subprocess
import sys

from uhashring import HashRing

from nodes import NODES, Cluster, ask_all, connect, metadump

PROXY = ("127.0.0.5", 21299)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corecache", required=True)
    parser.add_argument("--keys", type=int, default=10000)
    args = parser.parse_args()
    address = [f"{h}:{p}" for h, p, _, _ in NODES]
    with Cluster(args.corecache) as cluster:
        conf = os.path.join(cluster.workdir, "nutcracker.yml")
        with open(conf, "w") as f:
            f.write("pool:\n  listen: %s:%d\n  hash: md5\n  distribution: ketama\n"
                    "  timeout: 2000\n  servers:\n" % PROXY)
            for host, port, weight, _ in NODES:
                f.write(f"   - {host}:{port}:{weight}\n")
        proxy = subprocess.Popen(["nutcracker", "-c", conf, "-o", os.path.join(cluster.workdir, "nc.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return check(args.keys, address)
        finally:
            proxy.kill()
            proxy.wait()


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

    # twemproxy: store every key through it, then find which node holds it.
    client = connect(*PROXY)
    replies = ask_all(client, [f"set {k} 0 0 1\r\nx\r\n".encode() for k in keys], b"\r\n")
    bad = [r for r in replies if r != b"STORED"]
    if bad:
        raise SystemExit(f"twemproxy set failed: {bad[:3]}")
    # Any node answers any key: where a key is held is what metadump shows.
    holder = {}
    for (host, port, _, _), name in zip(NODES, address):
        for k in metadump(host, port):
            holder.setdefault(k, []).append(name)
    twem = [",".join(holder.get(k, ["none"])) for k in keys]

    differ = {"uhashring": [], "twemproxy": []}
    for k, owner, u, t in zip(keys, owners, uhash, twem):
        if u != owner:
            differ["uhashring"].append((k, owner, u))
        if t != owner:
            differ["twemproxy"].append((k, owner, t))
    share = {name: owners.count(name) for name in address}
    print(f"{len(keys)} keys; owners per node: {share}")
    for who, rows in differ.items():
        print(f"{who}: {len(keys) - len(rows)} of {len(keys)} agree with cluster owner")
        for k, owner, other in rows[:5]:
            print(f"  {k}: cluster owner {owner}, {who} {other}")
    return 1 if any(differ.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
