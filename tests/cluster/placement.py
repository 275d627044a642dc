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
import socket
import subprocess
import sys
import tempfile
import time

from uhashring import HashRing

NODES = [("127.0.0.2", 11211, 1, 1), ("127.0.0.3", 21212, 2, 2), ("127.0.0.4", 21213, 3, 1)]
PROXY = ("127.0.0.5", 21299)


def connect(host, port, deadline=15.0):
    end = time.time() + deadline
    while True:
        try:
            return socket.create_connection((host, port), timeout=10)
        except OSError:
            if time.time() > end:
                raise
            time.sleep(0.05)


def read_until(sock, buf, marker):
    while marker not in buf:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return buf


def ask_all(sock, lines, end=b"END\r\n"):
    """Pipelines commands, returns each one's reply (each ends with `end`)."""
    sock.sendall(b"".join(lines))
    replies, buf = [], b""
    while len(replies) < len(lines):
        buf = read_until(sock, buf, end)
        reply, buf = buf.split(end, 1)
        replies.append(reply)
    return replies


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corecache", required=True)
    parser.add_argument("--keys", type=int, default=10000)
    args = parser.parse_args()
    node_list = ",".join(f"{h}:{p}:{w}" for h, p, w, _ in NODES)
    address = [f"{h}:{p}" for h, p, _, _ in NODES]
    servers = []
    workdir = tempfile.mkdtemp(prefix="placement-")
    try:
        for host, port, _, threads in NODES:
            servers.append(subprocess.Popen(
                [args.corecache, "-l", host, "-p", str(port), "-t", str(threads), "-m", "64",
                 "--cluster-nodes", node_list],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        conf = os.path.join(workdir, "nutcracker.yml")
        with open(conf, "w") as f:
            f.write("pool:\n  listen: %s:%d\n  hash: md5\n  distribution: ketama\n"
                    "  timeout: 2000\n  servers:\n" % PROXY)
            for host, port, weight, _ in NODES:
                f.write(f"   - {host}:{port}:{weight}\n")
        proxy = subprocess.Popen(["nutcracker", "-c", conf, "-o", os.path.join(workdir, "nc.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.append(proxy)
        keys = [f"key:{i}" for i in range(args.keys)]

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
        holder = {}
        for (host, port, _, _), name in zip(NODES, address):
            sock = connect(host, port)
            for k, reply in zip(keys, ask_all(sock, [f"get {k}\r\n".encode() for k in keys])):
                if reply.startswith(b"VALUE "):
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
    finally:
        for p in servers:
            p.kill()
            p.wait()


if __name__ == "__main__":
    sys.exit(main())
