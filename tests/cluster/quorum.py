#!/usr/bin/env python3
"""Quorum reads after a failover: they return the newest value, and the
copy they find stale is repaired by it (not by the resync).

Starts the three nodes of nodes.NODES with --copies 2 and a resync delay
of RESYNC_DELAY_MS, so that after a failover the full resyncs wait long
enough for the test to look at the copies in between. Writes each key
node 0 acts for twice through it, the second time with `wait 2` (both
copies applied), then kills node 0 with SIGKILL. Each of its keys now has a new second
copy: the node that took node 0's place in the preference list, which
holds none of the key yet (the failover left that copy stale). Then:

  * before any read, the new copies are missing (metadump): the resync has
    not started, so nothing else can repair them in the checks below;
  * `cluster get` of each key through node 1 returns the second write's
    value and CAS;
  * right after, each new copy is there with that CAS (the acting node
    sent the key's state again), well before the resync delay ends; the
    nodes count one repair per key (`stats cluster` quorum_repairs);
  * a second round of quorum reads repairs nothing (every copy agrees).

    tests/cluster/quorum.py --corecache target/release/corecache
"""
import argparse
import sys
import time

from nodes import NODES, Cluster, ask_all, cluster_stats, connect, metadump, node_lines, preference_lists

VICTIM = 0
KEYS = [f"quorum{i}" for i in range(1000)]
RESYNC_DELAY_MS = 6000
DOWN_BOUND = 5.0


def repairs(cluster, indexes):
    """quorum_repairs summed over the nodes `indexes` (stats cluster)."""
    return sum(int(cluster_stats(cluster, index)["quorum_repairs"]) for index in indexes)


def wait_down(cluster, index, deadline):
    """Waits until node `index` says the victim is down."""
    sock = connect(*cluster.address(index))
    end = time.time() + deadline
    try:
        while time.time() < end:
            (reply,) = ask_all(sock, [b"cluster nodes\r\n"])
            if node_lines(reply)[VICTIM].split()[3] == "down":
                return
            time.sleep(0.02)
    finally:
        sock.close()
    raise RuntimeError(f"node {index} does not see node {VICTIM} down {deadline} s after the kill")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corecache", required=True)
    args = parser.parse_args()
    extra = ["--copies", "2", "--resync-delay-ms", str(RESYNC_DELAY_MS)]
    with Cluster(args.corecache, NODES, extra=extra) as cluster:
        names = cluster.names()
        writer = connect(*cluster.address(VICTIM))
        lists = preference_lists(writer, names, KEYS)
        keys = [key for key, listed in zip(KEYS, lists) if listed[0] == VICTIM]
        for key in keys:
            ask_all(writer, [f"set {key} 1 0 2\r\nv1\r\n".encode()], b"\r\n")
        newest = {}
        for key in keys:
            (stored,) = ask_all(writer, [f"set {key} 2 0 2\r\nv2\r\n".encode()], b"\r\n")
            (copies,) = ask_all(writer, [b"wait 2 5000\r\n"], b"\r\n")
            assert stored == b"STORED" and copies == b"COPIES 2", (key, stored, copies)
            (reply,) = ask_all(writer, [f"gets {key}\r\n".encode()])
            newest[key] = int(reply.split(b"\r\n")[0].split()[4])
        writer.close()
        survivors = [index for index in range(len(NODES)) if index != VICTIM]
        # The node that held no copy: the other survivor of each key's list.
        held_before = {index: metadump(*cluster.address(index)) for index in survivors}
        new_copy = {}
        for key, listed in zip(KEYS, lists):
            if key in newest:
                (holder,) = [index for index in listed if index != VICTIM]
                (other,) = [index for index in survivors if index != holder]
                assert key in held_before[holder] and key not in held_before[other], key
                new_copy[key] = other
        cluster.kill(VICTIM)
        killed = time.time()
        for index in survivors:
            wait_down(cluster, index, DOWN_BOUND)
        down = time.time() - killed
        reader_index = survivors[0]
        reader = connect(*cluster.address(reader_index))
        repairs_before = repairs(cluster, survivors)
        missing = {index: metadump(*cluster.address(index)) for index in survivors}
        stale = [key for key, index in new_copy.items() if key not in missing[index]]
        print(f"{len(keys)} keys of node {VICTIM} written twice (the second with wait 2); node {VICTIM} killed, "
              f"seen down by both survivors {down:.2f} s later; new copies still missing before the reads: {len(stale)} of {len(keys)}")
        failures = []
        if len(stale) != len(keys):
            failures.append(f"{len(keys) - len(stale)} new copies were there before any quorum read")
        started = time.time()
        wrong = 0
        for key in keys:
            (reply,) = ask_all(reader, [f"cluster get {key}\r\n".encode()])
            if reply != f"VALUE {key} 2 2 {newest[key]}\r\nv2\r\n".encode():
                wrong += 1
                if wrong <= 5:
                    failures.append(f"{key}: cluster get said {reply!r}, the newest write has CAS {newest[key]}")
        took = time.time() - started
        # The repair is a log record: it trails the read by the replication lag.
        end = time.time() + 1.0
        while True:
            held = {index: metadump(*cluster.address(index)) for index in survivors}
            unrepaired = [key for key, index in new_copy.items()
                          if held[index].get(key, {}).get("cas") != str(newest[key])]
            if not unrepaired or time.time() > end:
                break
            time.sleep(0.05)
        repaired_after = time.time() - killed
        repaired = repairs(cluster, survivors) - repairs_before
        print(f"quorum reads through node {reader_index}: {len(keys) - wrong} of {len(keys)} returned the newest "
              f"value ({took * 1000 / max(1, len(keys)):.2f} ms a read); repairs counted {repaired}; "
              f"new copies still stale {len(unrepaired)}, {repaired_after:.2f} s after the kill "
              f"(the resync waits {RESYNC_DELAY_MS / 1000:.0f} s)")
        if unrepaired:
            failures.append(f"{len(unrepaired)} new copies not repaired by the reads, e.g. {unrepaired[:3]}")
        if repaired_after >= RESYNC_DELAY_MS / 1000:
            failures.append("the checks ran past the resync delay: the resync may have repaired the copies")
        if repaired != len(keys):
            failures.append(f"{repaired} repairs counted, {len(keys)} expected")
        for key in keys:
            (reply,) = ask_all(reader, [f"cluster get {key}\r\n".encode()])
            if not reply.startswith(f"VALUE {key} 2 2 {newest[key]}\r\n".encode()):
                failures.append(f"{key}: second quorum read said {reply!r}")
                break
        again = repairs(cluster, survivors) - repairs_before - repaired
        if again != 0:
            failures.append(f"the second round repaired {again} copies (every copy agreed)")
        reader.close()
        for failure in failures:
            print("FAIL", failure)
        if failures:
            raise SystemExit(1)
        print("ok")
        return 0


if __name__ == "__main__":
    sys.exit(main())
