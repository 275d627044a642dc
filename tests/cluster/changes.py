#!/usr/bin/env python3
"""Node list changes under load: a fourth node joins three that hold
PRELOAD keys, then one of the first three leaves, then two nodes are added
at once through two different nodes.

Three nodes of equal weight start with PRELOAD keys. A client thread writes
and reads (3:1) HOT keys through every node in the list (values are a
sequence number per write) the whole time; each op's latency is recorded.

  * Join: node 3 starts with --cluster-join and `cluster add` (on node 0)
    names it. Afterwards every key is on exactly its new preference list;
    the keys whose owner changed are within 20% of 1/4 of them, all now
    owned by node 3; no key whose preference list kept its nodes changed
    holders.
  * Leave: `cluster remove` (on node 2) of node 1; once it says it has
    handed over everything (`handing_over 0`) and no node says it still
    takes keys (`taking 0`) the load stops using it and it is killed (-9)
    0.2 s later. Every key
    is then on exactly its preference list among the three left.
  * Concurrent adds: node 1 (restarted empty) and node 4 start with
    --cluster-join; `cluster add` of each is sent at the same moment to two
    different nodes. Every node ends with one list (one epoch and digest)
    holding both, and every key on exactly its preference list.

After each change: every preloaded key reads back with its value, every
acknowledged write of a hot key reads back with its value or a later one,
no read saw an older value than one already read, and the load's ops/s and
p99 latency before, during and after the change are printed.

    tests/cluster/changes.py --corecache target/release/corecache
"""
import argparse
import os
import sys
import threading
import time

from nodes import Cluster, SequenceLoad, ask_all, cluster_stats, connect, list_epoch, metadump, node_lines

NODES = [("127.0.0.2", 21401, 1, 1), ("127.0.0.3", 21402, 1, 2), ("127.0.0.4", 21403, 1, 1),
         ("127.0.0.5", 21404, 1, 1), ("127.0.0.6", 21405, 1, 1)]
PRELOAD = int(os.environ.get("PRELOAD", "100000"))
HOT = [f"hot{i}" for i in range(1000)]
SETTLE = 30.0
PHASE = 1.5


def ask(cluster, index, line):
    sock = connect(*cluster.address(index))
    try:
        (reply,) = ask_all(sock, [line.encode() + b"\r\n"], b"\r\n")
        return reply.decode()
    finally:
        sock.close()


def wait_for(what, condition, bound=SETTLE):
    end = time.time() + bound
    while not condition():
        if time.time() > end:
            raise RuntimeError(f"not within {bound} s: {what}")
        time.sleep(0.05)
    return time.time()


def settled(cluster, members):
    """Every member has one list (epoch and digest), sees every member alive
    and acts for its keys; the epoch."""
    seen = set()
    for index in members:
        sock = connect(*cluster.address(index))
        try:
            seen.add(list_epoch(sock))
            (reply,) = ask_all(sock, [b"cluster nodes\r\n"])
        finally:
            sock.close()
        lines = node_lines(reply)
        if len(lines) != len(members) or any(line.split()[3] != "alive" for line in lines):
            return None
        if cluster_stats(cluster, index).get("acting") != "1":
            return None
    return seen.pop() if len(seen) == 1 else None


def placement(cluster, members, keys):
    """(per key the nodes of its preference list, per key the nodes holding it)."""
    names = cluster.names()
    sock = connect(*cluster.address(members[0]))
    try:
        replies = []
        for at in range(0, len(keys), 5000):
            replies += ask_all(sock, [f"cluster owner {key}\r\n".encode() for key in keys[at:at + 5000]])
    finally:
        sock.close()
    lists = [[names.index(line.split()[1]) for line in reply.decode().splitlines()] for reply in replies]
    held = {index: metadump(*cluster.address(index)) for index in members}
    holders = [sorted(index for index in members if key in held[index]) for key in keys]
    return lists, holders


def settle_copies(cluster, members, keys):
    """Waits until every key is on exactly its preference list; returns (lists, holders, seconds)."""
    start = time.time()
    while True:
        lists, holders = placement(cluster, members, keys)
        wrong = [key for key, listed, held in zip(keys, lists, holders) if sorted(listed) != held]
        if not wrong:
            return lists, holders, time.time() - start
        if time.time() - start > SETTLE:
            for key, listed, held in [row for row in zip(keys, lists, holders) if sorted(row[1]) != row[2]][:5]:
                print(f"  {key}: preference list {listed}, held by {held}")
            raise RuntimeError(f"{len(wrong)} keys not on exactly their preference lists")
        time.sleep(0.3)


def check_values(cluster, index, load, keys):
    """Preloaded keys with their values; hot keys with their last acknowledged
    value or a later one. Returns the count of keys that are not."""
    sock = connect(*cluster.address(index))
    lost = []
    # What was acknowledged before the reads (the load goes on meanwhile).
    acked, doubtful = dict(load.acked), {key: set(values) for key, values in list(load.doubtful.items())}
    try:
        for at in range(0, len(keys), 5000):
            chunk = keys[at:at + 5000]
            for key, reply in zip(chunk, ask_all(sock, [f"get {key}\r\n".encode() for key in chunk])):
                if not reply.startswith(b"VALUE ") or reply.split(b"\r\n")[1] != key.encode():
                    lost.append(key)
        for key, reply in zip(HOT, ask_all(sock, [f"get {key}\r\n".encode() for key in HOT])):
            value = int(reply.split(b"\r\n")[1]) if reply.startswith(b"VALUE ") else None
            acked_before = acked.get(key)
            if acked_before is not None and (value is None or value < acked_before) and value not in doubtful.get(key, set()):
                lost.append((key, acked_before, value))
    finally:
        sock.close()
    for row in lost[:5]:
        print(f"  lost: {row}")
    return len(lost)


def report(load, name, before, start, end, after):
    for label, (a, b) in (("before", (before, start)), ("during", (start, end)), ("after", (end, after))):
        ops, p99, failed = load.phase(a, b)
        print(f"  {name} load {label}: {ops:.0f} ops/s, p99 {p99:.2f} ms, {failed} failed ({b - a:.2f} s)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corecache", required=True)
    args = parser.parse_args()
    keys = [f"pre{i}" for i in range(PRELOAD)]
    failures = 0
    with Cluster(args.corecache, NODES, members=3) as cluster:
        sock = connect(*cluster.address(0))
        started = time.time()
        for at in range(0, PRELOAD, 2000):
            chunk = keys[at:at + 2000]
            replies = ask_all(sock, [f"set {key} 0 0 {len(key)}\r\n{key}\r\n".encode() for key in chunk], b"\r\n")
            assert all(reply == b"STORED" for reply in replies), replies[:3]
        sock.close()
        print(f"{PRELOAD} keys preloaded in {time.time() - started:.1f} s")
        members = [0, 1, 2]
        before_lists, before_holders, _ = settle_copies(cluster, members, keys)

        load = SequenceLoad(cluster, members, HOT, pause=0.3)
        thread = threading.Thread(target=load.run)
        thread.start()
        try:
            # Join.
            time.sleep(PHASE)
            cluster.start(3, join=True)
            load.pool.nodes.append(3)
            time.sleep(0.3)
            join_start = time.time()
            assert ask(cluster, 0, "cluster add 127.0.0.5:21404:1") == "OK"
            members = [0, 1, 2, 3]
            join_end = wait_for("the join settled", lambda: settled(cluster, members) is not None)
            time.sleep(PHASE)
            join_after = time.time()
            print(f"join: node 3 acting, all nodes on epoch {settled(cluster, members)[0]}, "
                  f"{join_end - join_start:.2f} s after cluster add")
            lists, holders, copies_after = settle_copies(cluster, members, keys)
            moved = sum(1 for old, new in zip(before_lists, lists) if old[0] != new[0])
            to_new = sum(1 for old, new in zip(before_lists, lists) if old[0] != new[0] and new[0] == 3)
            changed = sum(1 for old, new in zip(before_lists, lists) if sorted(old) != sorted(new))
            kept_moved = sum(1 for old, new, was, now in zip(before_lists, lists, before_holders, holders)
                             if sorted(old) == sorted(new) and was != now)
            share = moved / PRELOAD
            print(f"  owners changed: {moved} of {PRELOAD} ({share:.3f}; expected 0.25 +-20%), {to_new} of them "
                  f"to node 3; preference lists changed: {changed}; keys whose list kept its nodes but moved: "
                  f"{kept_moved}; copies in place {copies_after:.2f} s after the join settled")
            if not (0.2 <= share <= 0.3) or to_new != moved or kept_moved:
                print("FAIL: the keys that moved are not the ones whose preference lists changed")
                failures += 1
            lost = check_values(cluster, 3, load, keys)
            print(f"  lost after the join: {lost}")
            failures += lost != 0
            report(load, "join", join_start - PHASE, join_start, join_end, join_after)

            # Leave.
            leave_start = time.time()
            assert ask(cluster, 2, "cluster remove 127.0.0.3:21402") == "OK"
            members = [0, 2, 3]
            # Stopped once it has handed everything over and no node takes
            # keys any more (until then a node may still send it some).
            wait_for("node 1 handed over and left",
                     lambda: cluster_stats(cluster, 1).get("member") == "0" and cluster_stats(cluster, 1).get("handing_over") == "0"
                     and all(cluster_stats(cluster, index).get("taking") == "0" for index in members))
            handed = time.time()
            load.pool.remove(1)
            # As an operator takes a node out of its clients before stopping
            # it: an op the load has in flight to it finishes first.
            time.sleep(0.2)
            cluster.kill(1)
            leave_end = wait_for("the leave settled", lambda: settled(cluster, members) is not None)
            time.sleep(PHASE)
            leave_after = time.time()
            print(f"leave: node 1 handed over {handed - leave_start:.2f} s after cluster remove, killed; "
                  f"settled {leave_end - leave_start:.2f} s after the remove")
            _, _, copies_after = settle_copies(cluster, members, keys)
            lost = check_values(cluster, 0, load, keys)
            print(f"  copies in place {copies_after:.2f} s after; lost after the leave: {lost}")
            failures += lost != 0
            report(load, "leave", leave_start - PHASE, leave_start, leave_end, leave_after)

            # Two adds at once, on two nodes.
            cluster.start(1, join=True)
            cluster.start(4, join=True)
            time.sleep(0.3)
            adds_start = time.time()
            adds = [(0, "cluster add 127.0.0.3:21402:1"), (2, "cluster add 127.0.0.6:21405:1")]
            replies = [None, None]
            threads = [threading.Thread(target=lambda i=i, a=a: replies.__setitem__(i, ask(cluster, *a)))
                       for i, a in enumerate(adds)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert replies == ["OK", "OK"], replies
            members = [0, 1, 2, 3, 4]
            load.pool.nodes += [1, 4]
            adds_end = wait_for("one list with both adds on every node", lambda: settled(cluster, members) is not None)
            time.sleep(PHASE)
            adds_after = time.time()
            epoch = settled(cluster, members)
            print(f"concurrent adds: every node on epoch {epoch[0]} digest {epoch[1]} with 5 members, "
                  f"settled {adds_end - adds_start:.2f} s after the adds")
            _, _, copies_after = settle_copies(cluster, members, keys)
            lost = check_values(cluster, 4, load, keys)
            print(f"  copies in place {copies_after:.2f} s after; lost after the adds: {lost}")
            failures += lost != 0
            report(load, "adds", adds_start - PHASE, adds_start, adds_end, adds_after)
            print(f"full resyncs started (resyncs_full per node, node 1 counted since its restart): "
                  f"{ {index: int(cluster_stats(cluster, index)['resyncs_full']) for index in members} }")
        finally:
            load.stop.set()
            thread.join()
        print(f"reads older than one already read: {len(load.violations)} ({load.violations[:3]})")
        print(f"failed ops by reply: {load.errors}")
        failures += bool(load.violations)
    if failures:
        print(f"FAIL: {failures} checks failed")
        return 1
    print("ok: joins, a leave and concurrent adds under load lost nothing and moved only the keys that change place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
