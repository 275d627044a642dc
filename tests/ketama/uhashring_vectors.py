"""Prints, for each node list, the node index uhashring's ketama ring picks
for key:0 .. key:N-1 (pip install uhashring). A node on port 11211 is named
by its host alone, as libmemcached hashes it. The output is what
src/cluster/ring.rs's tests hold."""
import sys
from uhashring import HashRing

LISTS = {
    "equal": [("127.0.0.1", 11211, 1), ("127.0.0.2", 21211, 1), ("127.0.0.3", 21211, 1)],
    "weighted": [("10.0.0.1", 11211, 1), ("10.0.0.2", 11212, 2), ("10.0.0.3", 11213, 3), ("10.0.0.4", 11214, 5)],
}

def name(host, port):
    return host if port == 11211 else f"{host}:{port}"

keys = int(sys.argv[1]) if len(sys.argv) > 1 else 200
for list_name, nodes in LISTS.items():
    names = [name(h, p) for h, p, _ in nodes]
    ring = HashRing({n: {"weight": w} for n, (_, _, w) in zip(names, nodes)}, hash_fn="ketama")
    print(list_name, "".join(str(names.index(ring.get_node(f"key:{i}"))) for i in range(keys)))
