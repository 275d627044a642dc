#!/usr/bin/env python3
"""Memory per stored item, corecache against Debian's memcached.

Starts each server (one core, -m 1024), loads the same N keys (20-byte keys,
32-byte values by default) with pipelined sets, then reports per item:
the resident memory growth (RSS after - RSS before) / N, and what each
server's own stats say: item header overhead ((bytes - N * (key + value)) / N)
and index bytes per item.

    python3 benches/memory_per_item.py [--items 1000000] [--value 32] [--corecache-args "-f 1.25"]
"""
import argparse
import os
import socket
import subprocess
import time

def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")

def connect(port):
    deadline = time.time() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)

def read_until(sock, terminator, buffer=b""):
    while terminator not in buffer:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed")
        buffer += chunk
    return buffer

def stats(sock):
    sock.sendall(b"stats\r\n")
    text = read_until(sock, b"END\r\n").decode()
    return {parts[1]: parts[2] for parts in (line.split(" ", 2) for line in text.splitlines()) if parts[0] == "STAT"}

def load(sock, items, value_size):
    value = b"v" * value_size
    batch = 1000
    for start in range(0, items, batch):
        request = b"".join(
            b"set key:%015d 0 0 %d\r\n%s\r\n" % (i, value_size, value) for i in range(start, min(items, start + batch))
        )
        sock.sendall(request)
        expected = b"STORED\r\n" * (min(items, start + batch) - start)
        got = b""
        while len(got) < len(expected):
            got += sock.recv(1 << 20)
        if got != expected:
            raise RuntimeError(f"unexpected reply: {got[:80]!r}")

def measure(name, command, port, items, value_size):
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sock = connect(port)
        stats(sock)
        before = rss_bytes(server.pid)
        load(sock, items, value_size)
        time.sleep(0.5)
        after = rss_bytes(server.pid)
        s = stats(sock)
        payload = items * (19 + value_size)  # "key:%015d" is 19 bytes
        stored = int(s["curr_items"])
        header = (int(s["bytes"]) - payload) / stored
        index = int(s["index_bytes"]) / stored if "index_bytes" in s else int(s.get("hash_bytes", 0)) / stored
        return {
            "name": name,
            "items": stored,
            "rss_per_item": (after - before) / stored,
            "header_per_item": header,
            "index_per_item": index,
        }
    finally:
        server.kill()
        server.wait()

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--value", type=int, default=32)
    parser.add_argument("--corecache", default="target/release/corecache")
    parser.add_argument("--corecache-args", default="", help="extra corecache flags, e.g. '-f 1.25'")
    args = parser.parse_args()
    user = ["-u", "root"] if os.getuid() == 0 else []
    results = [
        measure("memcached", ["memcached", *user, "-t", "1", "-m", "1024", "-p", "31411", "-l", "127.0.0.1"], 31411, args.items, args.value),
        measure("corecache", [args.corecache, "-t", "1", "-m", "1024", "-p", "31412", "-l", "127.0.0.1", *args.corecache_args.split()], 31412, args.items, args.value),
    ]
    print(f"{args.items} items, 19-byte keys, {args.value}-byte values")
    print(f"{'server':10} {'RSS/item':>10} {'header/item':>12} {'index/item':>11}")
    for r in results:
        print(f"{r['name']:10} {r['rss_per_item']:10.1f} {r['header_per_item']:12.1f} {r['index_per_item']:11.1f}")
    mc, cc = results
    print(f"ratio corecache/memcached RSS per item: {cc['rss_per_item'] / mc['rss_per_item']:.2f}x")

if __name__ == "__main__":
    main()
