#!/usr/bin/env python3
"""Crash and return: kill -9 a node of three under load, keep writing,
restart it empty; it ends holding every key of its preference lists with
the latest values, and no read sees an older value than one already read.

Starts the three nodes of nodes.NODES. One client thread writes and reads
(3:1) over KEYS keys through every live node (each forwards what it does
not act for); values are a sequence number per write. Node 1 is killed
after LOAD_BEFORE s, restarted empty LOAD_DOWN s later, and the load runs
LOAD_AFTER s more while it takes its copies back. Then:

  * reads: a read that returns an older value than one the client already
    read for that key is a violation (must be 0);
  * writes acknowledged: every key reads back (through the restarted node)
    with its last acknowledged value, or the value of a write that failed
    after it (its outcome unknown);
  * copies: every key whose preference list holds the restarted node is in
    its metadump with the CAS and size the other holders have.

    tests/cluster/returning.py --corecache target/release/corecache
"""
import argparse
import sys
import threading
import time

from nodes import Cluster, SequenceLoad, ask_all, connect, metadump, node_lines, preference_lists

VICTIM = 1
KEYS = [f"ret{i}" for i in range(600)]
LOAD_BEFORE, LOAD_DOWN, LOAD_AFTER = 1.5, 2.5, 3.0
BOUND = 20.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corecache", required=True)
    args = parser.parse_args()
    with Cluster(args.corecache) as cluster:
        load = SequenceLoad(cluster, range(len(cluster.nodes)), KEYS)
        thread = threading.Thread(target=load.run)
        thread.start()
        try:
            time.sleep(LOAD_BEFORE)
            cluster.kill(VICTIM)
            killed = time.time()
            time.sleep(LOAD_DOWN)
            cluster.start(VICTIM)
            restarted = time.time()
            cluster.wait_until_fresh(VICTIM)
            fresh = time.time() - restarted
            time.sleep(max(0.0, LOAD_AFTER - fresh))
        finally:
            load.stop.set()
            thread.join()
        print(f"node {VICTIM} killed, restarted empty {restarted - killed:.1f} s later, acting for its keys "
              f"again {fresh:.2f} s after the restart; {load.ops} ops, {load.failures} failed")
        return check(cluster, load)


def check(cluster, load):
    names = cluster.names()
    sock = connect(*cluster.address(0))

    def settled():
        (nodes,) = ask_all(sock, [b"cluster nodes\r\n"])
        return all(line.split()[3] == "alive" for line in node_lines(nodes))

    end = time.time() + BOUND
    while not settled():
        if time.time() > end:
            print("FAIL: the nodes did not all settle alive")
            return 1
        time.sleep(0.05)
    through = connect(*cluster.address(VICTIM))
    replies = ask_all(through, [f"get {key}\r\n".encode() for key in KEYS])
    stale = []
    for key, reply in zip(KEYS, replies):
        value = int(reply.split(b"\r\n")[1]) if reply.startswith(b"VALUE ") else None
        allowed = {load.acked.get(key)} | load.doubtful.get(key, set())
        if value not in allowed:
            stale.append((key, load.acked.get(key), value))
    lists = preference_lists(sock, names, KEYS)
    wrong = []
    end = time.time() + BOUND
    while True:
        held = [metadump(*cluster.address(i)) for i in range(len(names))]
        wrong = []
        for key, listed in zip(KEYS, lists):
            if VICTIM not in listed or key not in held[listed[0]]:
                continue
            mine, theirs = held[VICTIM].get(key), held[listed[0] if listed[0] != VICTIM else listed[1]].get(key)
            if mine is None or theirs is None or (mine["cas"], mine["size"]) != (theirs["cas"], theirs["size"]):
                wrong.append(key)
        if not wrong or time.time() > end:
            break
        time.sleep(0.2)
    print(f"reads older than one already read: {len(load.violations)}; keys without their last acknowledged "
          f"value: {len(stale)} of {len(KEYS)}; copies on the returned node unlike the others: {len(wrong)}")
    for row in (load.violations[:5] + stale[:5]):
        print(f"  {row}")
    for key, _, _ in stale[:3]:
        listed = preference_lists(sock, names, [key])[0]
        cas = [held[i].get(key, {}).get("cas") for i in range(len(names))]
        print(f"  {key}: preference list {listed}, CAS per node {cas}; writes (time, via, sequence, reply):")
        for at, via, sequence, reply in load.history.get(key, [])[-6:]:
            print(f"    {at:.3f} {via} {sequence} {reply!r}")
    if load.violations or stale or wrong:
        print(f"FAIL {wrong[:5]}")
        return 1
    print("ok: the returned node holds every key of its preference lists with the latest values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
