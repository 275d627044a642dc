#!/usr/bin/env python3
"""Failover: kill -9 one node of three under load; no key is lost.

Starts the three nodes of nodes.NODES and twemproxy (nutcracker:
md5/ketama, auto_eject_hosts, server_failure_limit 1) in front of them.
Two clients write continuously, each over its own keys: one through
twemproxy, one with pymemcache's HashClient and a ketama hasher (uhashring)
that drops a server at its first failure. A third thread watches
`cluster nodes`. After LOAD_BEFORE seconds node 1 is killed with SIGKILL;
the load goes on for LOAD_AFTER seconds more. Then:

  * lost keys: every key whose last acknowledged write came at least one
    replication lag before the kill (or after it) must read back with that
    write's value (or be absent if it was a delete); a write that failed
    after it may have landed too, so its value is accepted as well;
  * writes resumed: the last failed write after the kill, per client, is
    within 2 s of the kill;
  * copies: within COPIES_BOUND seconds every key is on both survivors
    (--copies 2 of two live nodes) with the same CAS, flags and size.

Prints the figures (kill to down, kill to writes resuming, ops, failures,
lost keys, time until copies were whole) and exits non-zero on a loss.

    tests/cluster/failover.py --corecache target/release/corecache
"""
import argparse
import random
import sys
import threading
import time

from pymemcache.client.hash import HashClient
from uhashring import HashRing

from nodes import NODES, Cluster, Twemproxy, ask_all, connect, metadump, node_lines

PROXY = ("127.0.0.5", 21300)
VICTIM = 1
KEYS = 1500
LOAD_BEFORE = 2.0
LOAD_AFTER = 4.0
RESUME_BOUND = 2.0
COPIES_BOUND = 15.0
SHARED = ("exp", "cas", "flags", "size")


class KetamaHasher:
    """pymemcache's hasher interface over uhashring's ketama, with the
    cluster's weights (a node on port 11211 is named by its host)."""

    weights = {f"{h}:{p}": w for h, p, w, _ in NODES}

    def __init__(self):
        self.ring = HashRing(nodes={}, hash_fn="ketama")
        self.names = {}

    def add_node(self, server):
        host, port = server.rsplit(":", 1)
        name = host if port == "11211" else server
        self.names[name] = server
        self.ring.add_node(name, {"weight": self.weights[server]})

    def remove_node(self, server):
        host, port = server.rsplit(":", 1)
        self.ring.remove_node(host if port == "11211" else server)

    def get_node(self, key):
        if not self.names or not self.ring.get_nodes():
            return None
        return self.names.get(self.ring.get_node(key))


class Ledger:
    """What one client wrote: per key the last acknowledged value (None for
    a delete) and when, and the values of writes that failed after it."""

    def __init__(self, name):
        self.name = name
        self.acked = {}
        self.doubtful = {}
        self.ops = 0
        self.failures = []  # times of failed writes

    def ok(self, key, value, at):
        self.acked[key] = (value, at)
        self.doubtful.pop(key, None)
        self.ops += 1

    def failed(self, key, value, at):
        self.doubtful.setdefault(key, set()).add(value)
        self.failures.append(at)
        self.ops += 1


def run_load(ledger, write, keys, stop, seed):
    rng = random.Random(seed)
    sequence = 0
    while not stop.is_set():
        key = rng.choice(keys)
        sequence += 1
        value = None if rng.random() < 0.1 else f"{key}={sequence}"
        try:
            ok = write(key, value)
        except Exception:  # a refused or failed write: its outcome is unknown
            ok = False
        now = time.time()
        if ok:
            ledger.ok(key, value, now)
        else:
            ledger.failed(key, value, now)


def proxy_writer():
    sock = connect(*PROXY)
    buf = [b""]

    def write(key, value):
        if value is None:
            line = f"delete {key}\r\n".encode()
            good = (b"DELETED", b"NOT_FOUND")
        else:
            line = f"set {key} 7 0 {len(value)}\r\n{value}\r\n".encode()
            good = (b"STORED",)
        sock.sendall(line)
        while b"\r\n" not in buf[0]:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("proxy closed the connection")
            buf[0] += chunk
        reply, buf[0] = buf[0].split(b"\r\n", 1)
        return reply in good

    return write


def hash_client_writer():
    client = HashClient([(h, p) for h, p, _, _ in NODES], hasher=KetamaHasher, retry_attempts=0,
                        dead_timeout=600, connect_timeout=1, timeout=1, default_noreply=False)

    def write(key, value):
        if value is None:
            client.delete(key, noreply=False)
            return True  # deleted or not found: both acknowledge the key is gone
        return client.set(key, value, flags=7, noreply=False)

    return write


def watch_down(cluster, stop, seen):
    sock = connect(*cluster.address(0))
    while not stop.is_set():
        (reply,) = ask_all(sock, [b"cluster nodes\r\n"])
        lines = node_lines(reply)
        if lines[VICTIM].split()[3] == "down" and "down" not in seen:
            seen["down"] = time.time()
        time.sleep(0.01)


def replication_lag(cluster):
    """The victim's replication lag p99 (its copies' delay), in seconds."""
    sock = connect(*cluster.address(VICTIM))
    (reply,) = ask_all(sock, [b"stats replication\r\n"])
    sock.close()
    stats = dict(line.split()[1:3] for line in reply.decode().splitlines() if line.startswith("STAT "))
    return int(stats.get("lag_p99_us", "0")) / 1e6


def read_back(cluster, ledgers, kill_at, margin):
    """(lost, checked, at_risk): keys whose last acknowledged value is gone."""
    sock = connect(*cluster.address(0))
    lost, checked, at_risk = [], 0, 0
    for ledger in ledgers:
        keys = sorted(set(ledger.acked) | set(ledger.doubtful))
        replies = ask_all(sock, [f"get {key}\r\n".encode() for key in keys])
        for key, reply in zip(keys, replies):
            value = reply.split(b"\r\n")[1].decode() if reply.startswith(b"VALUE ") else None
            acked, at = ledger.acked.get(key, (None, 0.0))
            allowed = {acked} | ledger.doubtful.get(key, set())
            if key not in ledger.acked:
                allowed.add(None)  # never acknowledged: absent is fine
            if kill_at - margin < at < kill_at:
                at_risk += 1  # written inside the replication lag before the kill
                continue
            checked += 1
            if value not in allowed:
                lost.append((ledger.name, key, acked, value))
    return lost, checked, at_risk


def copies_whole(cluster):
    survivors = [i for i in range(len(cluster.nodes)) if i != VICTIM]
    held = [metadump(*cluster.address(i)) for i in survivors]
    keys = set(held[0]) | set(held[1])
    wrong = [key for key in keys
             if key not in held[0] or key not in held[1]
             or any(held[0][key][f] != held[1][key][f] for f in SHARED)]
    return wrong, len(keys)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corecache", required=True)
    args = parser.parse_args()
    ejecting = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 600000\n"
    with Cluster(args.corecache) as cluster, Twemproxy(cluster, PROXY, ejecting):
        time.sleep(1.0)  # the nodes find each other (failure detection)
        return run(cluster)


def run(cluster):
    ledgers = [Ledger("twemproxy"), Ledger("HashClient")]
    writers = [proxy_writer(), hash_client_writer()]
    keyspaces = [[f"tw{i}" for i in range(KEYS)], [f"hc{i}" for i in range(KEYS)]]
    stop, watch_stop, seen = threading.Event(), threading.Event(), {}
    threads = [threading.Thread(target=run_load, args=(ledger, write, keys, stop, seed))
               for seed, (ledger, write, keys) in enumerate(zip(ledgers, writers, keyspaces))]
    threads.append(threading.Thread(target=watch_down, args=(cluster, watch_stop, seen)))
    for thread in threads:
        thread.start()
    time.sleep(LOAD_BEFORE)
    lag = replication_lag(cluster)
    kill_at = time.time()
    cluster.kill(VICTIM)
    time.sleep(LOAD_AFTER)
    stop.set()
    for thread in threads[:-1]:
        thread.join()
    watch_stop.set()
    threads[-1].join()

    margin = max(2 * lag, 0.05)
    down = seen.get("down", float("nan")) - kill_at
    print(f"node {VICTIM} killed after {LOAD_BEFORE:.0f} s of load; declared down {down:.2f} s after the kill")
    failed = False
    for ledger in ledgers:
        after = [t - kill_at for t in ledger.failures if t >= kill_at]
        resumed = max(after) if after else 0.0
        print(f"{ledger.name}: {ledger.ops} writes, {len(ledger.failures)} failed "
              f"({len(after)} after the kill); writes succeed again {resumed:.2f} s after the kill")
        if resumed > RESUME_BOUND:
            print(f"FAIL: {ledger.name} writes failed {resumed:.2f} s after the kill (bound {RESUME_BOUND} s)")
            failed = True
        if ledger.ops - len(ledger.failures) <= 0:
            failed = True
    lost, checked, at_risk = read_back(cluster, ledgers, kill_at, margin)
    print(f"lost keys: {len(lost)} of {checked} checked ({at_risk} written within the replication "
          f"lag margin {margin * 1000:.1f} ms before the kill not counted)")
    for name, key, acked, value in lost[:10]:
        print(f"  {name} {key}: acknowledged {acked!r}, read {value!r}")
    deadline = kill_at + COPIES_BOUND
    while True:
        wrong, total = copies_whole(cluster)
        if not wrong or time.time() > deadline:
            break
        time.sleep(0.2)
    print(f"copies: {total} keys, {len(wrong)} not on both survivors alike; "
          f"checked {time.time() - kill_at:.2f} s after the kill")
    for key in wrong[:5]:
        print(f"  {key}")
    if lost or wrong or failed:
        print("FAIL")
        return 1
    print("ok: no key lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
