#!/usr/bin/env python3
"""Partition: cut one node of three off; the two-node side acts for its
keys, the cut node refuses writes and serves reads; once healed, the cut
node holds the majority's values.

Each node runs in a network namespace of its own (ccpart0-2, addresses
10.250.0.10-12, veth pairs on a bridge in the root namespace that has no
address); the test's clients run in a fourth namespace (10.250.0.100) or,
to reach the cut node, in the cut node's own. The cut is `ip link set
<root end> down`. Everything is deleted at the end, also on failure.

  1. 400 keys are written (value v1) and copied (--copies 2).
  2. Node 2 is cut off. Nodes 0 and 1 declare it down; it sees no majority.
  3. The majority side writes v2 to every key: all are stored.
     The cut node answers writes with SERVER_ERROR and reads with what it
     holds (v1, or a miss).
  4. The cut is healed. Node 2 takes fresh copies (it was stale) and acts
     for its keys again; every key read through it gives v2, and every key
     of its preference lists is in its metadump with the majority's CAS.

    tests/cluster/partition.py --corecache target/release/corecache   (as root)
"""
import argparse
import ctypes
import os
import socket
import subprocess
import sys
import threading
import time

from nodes import Cluster, ask_all, metadump, node_lines, preference_lists

PREFIX = "ccpart"
BRIDGE = f"{PREFIX}br"
CLIENT_NS = f"{PREFIX}c"
NODES = [("10.250.0.10", 11211, 1, 1), ("10.250.0.11", 21212, 2, 2), ("10.250.0.12", 21213, 3, 1)]
CUT = 2
KEYS = [f"part{i}" for i in range(400)]
BOUND = 15.0
CLONE_NEWNET = 0x40000000
NO_MAJORITY = b"SERVER_ERROR this node cannot reach a majority of the cluster (partition policy)"


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def namespace(index):
    return f"{PREFIX}{index}"


def setup():
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "link", "set", BRIDGE, "up")
    ends = [(namespace(i), host) for i, (host, _, _, _) in enumerate(NODES)] + [(CLIENT_NS, "10.250.0.100")]
    for ns, address in ends:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", f"{ns}r", "type", "veth", "peer", "name", f"{ns}n")
        sh("ip", "link", "set", f"{ns}n", "netns", ns)
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", f"{ns}n")
        sh("ip", "-n", ns, "link", "set", f"{ns}n", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "set", f"{ns}r", "master", BRIDGE, "up")


def teardown():
    for ns in [namespace(i) for i in range(len(NODES))] + [CLIENT_NS]:
        sh("ip", "link", "del", f"{ns}r", check=False)  # and its peer in the namespace
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", BRIDGE, check=False)


def cut(index, up):
    sh("ip", "link", "set", f"{namespace(index)}r", "up" if up else "down")


def connect_in(ns, host, port, deadline=15.0):
    """A TCP connection made from inside namespace `ns` (on a thread of its
    own that enters it; the socket stays in it)."""
    result = {}

    def enter_and_connect():
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                result["error"] = OSError(ctypes.get_errno(), "setns")
                return
        finally:
            os.close(fd)
        end = time.time() + deadline
        while True:
            try:
                result["sock"] = socket.create_connection((host, port), timeout=10)
                return
            except OSError as error:
                if time.time() > end:
                    result["error"] = error
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=enter_and_connect)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["sock"]


def client(host, port):
    return connect_in(CLIENT_NS, host, port)


def inside_cut(host, port):
    return connect_in(namespace(CUT), host, port)


def node_view(sock):
    """(states by node, whether it sees a majority) from `cluster nodes` and `stats cluster`."""
    nodes, stats = ask_all(sock, [b"cluster nodes\r\n", b"stats cluster\r\n"])
    states = [line.split()[3] for line in node_lines(nodes)]
    stat = dict(line.split()[1:3] for line in stats.decode().splitlines() if line.startswith("STAT "))
    return states, stat["majority"] == "1"


def wait_for(what, check, bound=BOUND, explain=None):
    started = time.time()
    while not check():
        if time.time() - started > bound:
            if explain:
                explain()
            raise SystemExit(f"FAIL: not {what} within {bound} s")
        time.sleep(0.05)
    return time.time() - started


def values(sock, keys):
    replies = ask_all(sock, [f"get {key}\r\n".encode() for key in keys])
    out = {}
    for key, reply in zip(keys, replies):
        if reply.startswith(b"VALUE "):
            out[key] = reply.split(b"\r\n")[1].decode()
        elif reply == b"":
            out[key] = None
        else:
            out[key] = reply.decode()
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corecache", required=True)
    args = parser.parse_args()
    teardown()  # what a killed earlier run left
    try:
        setup()
        cluster = Cluster(args.corecache, NODES, wrap=lambda i: ["ip", "netns", "exec", namespace(i)], connect=client)
        with cluster:
            return run(cluster)
    finally:
        teardown()


def run(cluster):
    socks = [client(*cluster.address(i)) for i in range(len(NODES))]
    wait_for("every node alive", lambda: all(node_view(s)[0] == ["alive"] * 3 for s in socks))
    names = cluster.names()
    replies = ask_all(socks[0], [f"set {key} 0 0 2\r\nv1\r\n".encode() for key in KEYS], b"\r\n")
    assert all(reply == b"STORED" for reply in replies), replies[:3]

    def copies_agree():
        lists = preference_lists(socks[0], names, KEYS)
        held = [metadump(*cluster.address(i), connect=client) for i in range(len(NODES))]
        return all({i for i in range(len(NODES)) if key in held[i]} == set(listed)
                   for key, listed in zip(KEYS, lists))

    wait_for("copies in place", copies_agree)
    cut_node = inside_cut(*cluster.address(CUT))

    cut(CUT, up=False)
    started = time.time()
    down = wait_for("node 2 down on both other nodes", lambda: all(node_view(s)[0][CUT] == "down" for s in socks[:2]))
    alone = wait_for("no majority on the cut node", lambda: not node_view(cut_node)[1])
    print(f"cut: node {CUT} down on the majority side after {down:.2f} s; "
          f"the cut node saw no majority after {time.time() - started:.2f} s")

    replies = ask_all(socks[0], [f"set {key} 0 0 3\r\nv22\r\n".encode() for key in KEYS], b"\r\n")
    stored = sum(reply == b"STORED" for reply in replies)
    print(f"majority side: {stored} of {len(KEYS)} writes stored")
    (refused,) = ask_all(cut_node, [b"set part0 0 0 2\r\nv3\r\n"], b"\r\n")
    seen = values(cut_node, KEYS)
    served = sum(value == "v1" for value in seen.values())
    errors = [value for value in seen.values() if value not in ("v1", None)]
    print(f"cut node: a write got {refused.decode()!r}; reads: {served} served (v1), "
          f"{sum(v is None for v in seen.values())} misses, {len(errors)} errors")
    del alone

    cut(CUT, up=True)
    healed = time.time()
    def explain():
        for index, sock in enumerate(socks):
            nodes, stats = ask_all(sock, [b"cluster nodes\r\n", b"stats replication\r\n"])
            print(f"node {index}:\n{nodes.decode()}{stats.decode()}")

    wait_for("every node alive and synced on every node",
             lambda: all(node_view(s)[0] == ["alive"] * 3 for s in socks), explain=explain)
    print(f"healed: every node alive and synced everywhere {time.time() - healed:.2f} s after the heal")

    def cut_node_holds_majority_values():
        lists = preference_lists(socks[0], names, KEYS)
        held = [metadump(*cluster.address(i), connect=client) for i in range(len(NODES))]
        wrong = []
        for key, listed in zip(KEYS, lists):
            if CUT not in listed:
                continue
            other = next(i for i in listed if i != CUT)
            mine = held[CUT].get(key)
            theirs = held[other].get(key)
            if mine is None or theirs is None or (mine["cas"], mine["size"]) != (theirs["cas"], theirs["size"]):
                wrong.append(key)
        return wrong

    # Bounded: the last resync to reach the cut node may land just after
    # every node reports it synced; how long that took is printed.
    reader = client(*cluster.address(CUT))
    settle_started = time.time()
    while True:
        through_cut = values(reader, KEYS)
        stale = [key for key, value in through_cut.items() if value != "v22"]
        wrong = cut_node_holds_majority_values()
        if (not stale and not wrong) or time.time() - settle_started > 10:
            break
        time.sleep(0.2)
    print(f"the cut node held the majority's values {time.time() - settle_started:.2f} s after every node said synced")
    print(f"after the heal: {len(stale)} keys read through the cut node without the majority's value; "
          f"{len(wrong)} of its copies differ from the majority's")
    ok = (stored == len(KEYS) and refused == NO_MAJORITY and served > 0 and not errors
          and not stale and not wrong)
    if not ok:
        print(f"FAIL: stale {stale[:5]}, wrong copies {wrong[:5]}, errors {errors[:3]}")
        held = [metadump(*cluster.address(i), connect=client) for i in range(len(NODES))]
        for key in (stale + wrong)[:8]:
            views = [preference_lists(sock, names, [key])[0] for sock in socks]
            print(f"  {key}: read through the cut node {through_cut.get(key)!r}; preference lists as each node "
                  f"sees them {views}; held: " + "; ".join(
                      f"node {i} {held[i][key]['cas']}/{held[i][key]['size']}" if key in held[i] else f"node {i} -"
                      for i in range(len(NODES))))
        return 1
    print("ok: the majority acted for the cut node's keys; the cut node refused writes, "
          "served reads, and holds the majority's values after the heal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
