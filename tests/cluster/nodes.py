"""The Python cluster tests' harness: start corecache nodes on loopback
"hosts", talk to them over plain sockets, read what each node holds.

    with Cluster(corecache, NODES) as cluster:
        sock = connect(*cluster.address(0))
"""
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

# Three nodes as the cluster tests run them: a node on port 11211 (ketama
# names it by its host alone), unequal weights, mixed -t 1 / -t 2.
NODES = [("127.0.0.2", 11211, 1, 1), ("127.0.0.3", 21212, 2, 2), ("127.0.0.4", 21213, 3, 1)]


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


class Pool:
    """A load client's connections, one per node, over the nodes `nodes`
    (changed as the list changes); a node whose connection failed is left
    alone for `pause` seconds."""

    def __init__(self, cluster, nodes, pause=0.5):
        self.cluster = cluster
        self.nodes = list(nodes)
        self.pause = pause
        self.socks = {}
        self.down_until = {}
        # Nodes taken out whose connections the load's thread is to close.
        self.forget = set()

    def remove(self, index):
        """Takes a node out (a node killed and started again later is
        reached on a new connection, not its old one)."""
        self.nodes.remove(index)
        self.forget.add(index)

    def sock(self, rng):
        """(index, socket) of a random node not left alone, or (None, None)."""
        now = time.time()
        live = [i for i in self.nodes if self.down_until.get(i, 0) <= now]
        if not live:
            time.sleep(0.01)
            return None, None
        index = rng.choice(live)
        if index in self.forget:
            self.forget.discard(index)
            old = self.socks.pop(index, None)
            if old:
                old.close()
        if index not in self.socks:
            try:
                self.socks[index] = connect(*self.cluster.address(index), deadline=0.2)
                self.socks[index].settimeout(2)
            except OSError:
                self.down_until[index] = now + self.pause
                return None, None
        return index, self.socks[index]

    def drop(self, index):
        sock = self.socks.pop(index, None)
        if sock:
            sock.close()
        self.down_until[index] = time.time() + self.pause


class SequenceLoad:
    """One client thread writing and reading (3:1) `keys` through the nodes
    of its pool (`pool.nodes`, changed as the cluster changes); each write's
    value is the next sequence number. Run `run` in a thread, set `stop`."""

    def __init__(self, cluster, nodes, keys, pause=0.5):
        self.pool = Pool(cluster, nodes, pause)
        self.keys = keys
        self.acked = {}       # key -> last acknowledged sequence
        self.history = {}     # key -> [(time, node written through, sequence, reply)]
        self.doubtful = {}    # key -> sequences of failed writes after it
        self.read_max = {}    # key -> largest sequence read
        self.violations = []  # (key, read, already read)
        self.samples = []     # (start time, latency, ok)
        self.errors = {}      # failed op's reply (or exception) -> count
        self.ops = self.failures = 0
        self.stop = threading.Event()

    def failed(self, why):
        self.failures += 1
        self.errors[why] = self.errors.get(why, 0) + 1

    def run(self):
        rng = random.Random(16)
        sequence = 0
        while not self.stop.is_set():
            index, sock = self.pool.sock(rng)
            if sock is None:
                continue
            key = rng.choice(self.keys)
            self.ops += 1
            pending = None
            start = time.time()
            ok = False
            try:
                if rng.random() < 0.75:
                    sequence += 1
                    pending = sequence
                    value = str(sequence)
                    (reply,) = ask_all(sock, [f"set {key} 0 0 {len(value)}\r\n{value}\r\n".encode()], b"\r\n")
                    self.history.setdefault(key, []).append((time.time(), index, sequence, reply))
                    if reply == b"STORED":
                        ok = True
                        self.acked[key] = sequence
                        self.doubtful.pop(key, None)
                    else:
                        self.failed(reply)
                        self.doubtful.setdefault(key, set()).add(sequence)
                else:
                    (reply,) = ask_all(sock, [f"get {key}\r\n".encode()])
                    ok = not reply.startswith(b"SERVER_ERROR")
                    if not ok:
                        self.failed(reply)
                    if reply.startswith(b"VALUE "):
                        read = int(reply.split(b"\r\n")[1])
                        seen = self.read_max.get(key, 0)
                        if read < seen:
                            self.violations.append((key, read, seen))
                        self.read_max[key] = max(seen, read)
            except (OSError, RuntimeError) as error:
                self.failed(repr(error))
                if pending is not None:
                    self.doubtful.setdefault(key, set()).add(pending)
                self.pool.drop(index)
            self.samples.append((start, time.time() - start, ok))

    def phase(self, start, end):
        """ops/s, p99 latency (ms) and failed ops of the ops started in [start, end)."""
        rows = [(latency, ok) for at, latency, ok in self.samples if start <= at < end]
        if not rows or end <= start:
            return 0.0, 0.0, 0
        latencies = sorted(latency for latency, _ in rows)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return len(rows) / (end - start), p99 * 1000, sum(1 for _, ok in rows if not ok)


def node_lines(reply):
    """The NODE lines of a `cluster nodes` reply (its first line is EPOCH)."""
    return [line for line in reply.decode().splitlines() if line.startswith("NODE ")]


def list_epoch(sock):
    """(epoch, digest) of the node list, as `cluster nodes` says."""
    (reply,) = ask_all(sock, [b"cluster nodes\r\n"])
    _, epoch, digest = reply.decode().splitlines()[0].split()
    return int(epoch), digest


def preference_lists(sock, names, keys):
    """Each key's preference list as `cluster owner` gives it: indexes into
    `names` (host:port), the node acting for the key first."""
    replies = ask_all(sock, [f"cluster owner {key}\r\n".encode() for key in keys])
    return [[names.index(line.split()[1]) for line in reply.decode().splitlines()] for reply in replies]


def cluster_stats(cluster, index):
    """A node's `stats cluster`, as {name: value}."""
    sock = cluster.connect(*cluster.address(index))
    try:
        (reply,) = ask_all(sock, [b"stats cluster\r\n"])
    finally:
        sock.close()
    return dict(line.split()[1:3] for line in reply.decode().splitlines() if line.startswith("STAT "))


def metadump(host, port, connect=connect):
    """The keys a node holds itself (not what it answers by forwarding),
    each with its metadump fields: {key: {"exp": .., "cas": .., ...}}."""
    sock = connect(host, port)
    try:
        (reply,) = ask_all(sock, [b"lru_crawler metadump all\r\n"], b"END\r\n")
    finally:
        sock.close()
    held = {}
    for line in reply.decode().splitlines():
        if not line.startswith("key="):
            continue  # the OK before the first line
        fields = dict(field.split("=", 1) for field in line.split())
        held[urllib.parse.unquote(fields.pop("key"))] = fields
    return held


class Cluster:
    """Nodes (host, port, weight, threads) started with one node list;
    `wrap(index)` is a command prefix for a node (a network namespace), and
    `connect` how to reach one."""

    def __init__(self, corecache, nodes=NODES, extra=(), wrap=lambda index: [], connect=connect, members=None):
        """`members`: how many of `nodes` start in the list (the rest are
        started later with `join`, outside it until a `cluster add`)."""
        self.nodes = nodes
        self.members = len(nodes) if members is None else members
        self.node_list = ",".join(f"{h}:{p}:{w}" for h, p, w, _ in nodes[:self.members])
        self.corecache = corecache
        self.extra = list(extra)
        self.wrap = wrap
        self.connect = connect
        self.procs = [None] * len(nodes)
        self.workdir = tempfile.mkdtemp(prefix="cluster-")

    def address(self, index):
        host, port, _, _ = self.nodes[index]
        return host, port

    def names(self):
        return [f"{h}:{p}" for h, p, _, _ in self.nodes]

    def start(self, index, join=False):
        host, port, _, threads = self.nodes[index]
        log = open(os.path.join(self.workdir, f"node{index}.log"), "ab")
        joining = ["--cluster-join"] if join else []
        self.procs[index] = subprocess.Popen(
            self.wrap(index) + [self.corecache, "-l", host, "-p", str(port), "-t", str(threads), "-m", "64",
                                "--cluster-nodes", self.node_list] + joining + self.extra,
            stdout=log, stderr=subprocess.STDOUT)
        self.connect(host, port).close()

    def kill(self, index):
        proc = self.procs[index]
        if proc is not None:
            proc.kill()
            proc.wait()
            self.procs[index] = None

    def wait_until_fresh(self, index, deadline=20.0):
        """Waits until a node has taken the others' copies and acts for its
        keys (a node starts stale: it may be back from a crash, empty)."""
        sock = self.connect(*self.address(index))
        end = time.time() + deadline
        try:
            while True:
                (reply,) = ask_all(sock, [b"stats cluster\r\n"])
                if b"STAT acting 1\r\n" in reply:
                    return
                if time.time() > end:
                    raise RuntimeError(f"node {index} still stale: {reply!r}")
                time.sleep(0.02)
        finally:
            sock.close()

    def __enter__(self):
        for index in range(self.members):
            self.start(index)
        for index in range(self.members):
            self.wait_until_fresh(index)
        return self

    def state(self, index):
        """What a running node says of the cluster: `cluster nodes` and
        `stats cluster` (for a failing test's report)."""
        try:
            sock = self.connect(*self.address(index), deadline=2.0)
            sock.settimeout(2.0)
            try:
                replies = ask_all(sock, [b"cluster nodes\r\n", b"stats cluster\r\n"])
            finally:
                sock.close()
        except (OSError, RuntimeError) as e:
            return f"(no answer: {e!r})"
        return b"".join(replies).decode("utf-8", "replace")

    def __exit__(self, *exc):
        if exc[0] is not None:
            for index in range(len(self.nodes)):
                if self.procs[index] is not None:
                    print(f"--- node {index} state:\n{self.state(index)}")
        for index in range(len(self.nodes)):
            self.kill(index)
        if exc[0] is not None:
            for index in range(len(self.nodes)):
                path = os.path.join(self.workdir, f"node{index}.log")
                if not os.path.exists(path):
                    continue
                with open(path, "rb") as f:
                    # The host checks' warnings say nothing of the failure.
                    lines = [line for line in f.read().decode("utf-8", "replace").splitlines()
                             if " host: " not in line]
                tail = "\n".join(lines[-30:])
                if tail:
                    print(f"--- node {index} log ({path}):\n{tail}")
        return False


class Twemproxy:
    """nutcracker in front of a cluster's nodes, placing keys with md5 and
    ketama (as the cluster does), with `extra` pool settings."""

    def __init__(self, cluster, listen, extra=""):
        self.conf = os.path.join(cluster.workdir, f"nutcracker-{listen[1]}.yml")
        with open(self.conf, "w") as f:
            f.write("pool:\n  listen: %s:%d\n  hash: md5\n  distribution: ketama\n  timeout: 1000\n" % listen)
            f.write(extra)
            f.write("  servers:\n")
            for host, port, weight, _ in cluster.nodes:
                f.write(f"   - {host}:{port}:{weight}\n")
        self.log = os.path.join(cluster.workdir, f"nutcracker-{listen[1]}.log")
        self.listen = listen

    def __enter__(self):
        self.proc = subprocess.Popen(["nutcracker", "-c", self.conf, "-o", self.log],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        connect(*self.listen).close()
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        return False
