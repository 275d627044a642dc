#!/usr/bin/env python3
"""mcdiff: seeded differential test of corecache against memcached 1.6.45.

Random streams of classic and meta text commands (valid and malformed,
pipelined and not) over a small key space go to both servers; their replies
are compared unit by unit, with CAS values mapped per key and timing fields
compared loosely.  Every difference is reported (seed, batch, bytes sent, both
replies), shrunk to a minimal reproducer on fresh state, grouped by signature,
and checked against ALLOWLIST.  Exit status 0 iff no unexplained difference.

Stdlib only.  See README.md beside this file.
"""

import argparse
import base64
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_MEMCACHED = os.path.join(os.path.dirname(REPO), "shared", "peers", "memcached-1.6.45")

# ---------------------------------------------------------------------------
# Deliberate differences.  Each entry: name, reason, and a predicate over a
# Diff (see class Diff: d.label is the generator labels of the minimal
# reproducer's commands joined by '+', d.cmd its bytes as sent to memcached, d.mc_unit
# and d.cc_unit the first differing reply unit of each server, d.mc / d.cc the
# whole replies).  A difference matching an entry is counted but does not fail
# the run.  Keep README.md's list in step with this table.
#
# Example (not active):
#   Allowed("me-size", "item sizes differ: no slab header in corecache",
#           lambda d: d.label.startswith("me.") and d.mc_unit.startswith(b"ME ")),
# ---------------------------------------------------------------------------


class Allowed:
    def __init__(self, name, reason, match):
        self.name, self.reason, self.match = name, reason, match


def _line(unit):
    return unit.split(b"\r\n", 1)[0]


def _me_internal(d):
    """ME lines that differ only in item layout (cls=, size=) and the
    fields compared loosely elsewhere (cas=, exp=, la=)."""
    m, c = _line(d.mc_unit).split(b" "), _line(d.cc_unit).split(b" ")
    if m[:1] != [b"ME"] or c[:1] != [b"ME"] or len(m) != len(c) or m[1] != c[1]:
        return False
    differing = [f for f, g in zip(m, c) if f != g]
    return bool(differing) and all(f.split(b"=")[0] in (b"cls", b"size", b"cas", b"exp", b"la") for f in differing) \
        and any(f.split(b"=")[0] in (b"cls", b"size") for f in differing)


def _me_base64(d):
    """`me <key> b`: memcached never decodes the key (its bug)."""
    return d.mc_unit == b"EN\r\n" and _line(d.cc_unit).startswith(b"ME ") and \
        re.search(rb"(^|\n)me \S+ b\r?\n", d.cmd) is not None


def _wrapped_ttl(d):
    """memcached prints an already-passed TTL as a wrapped 32-bit number;
    corecache prints 0. Lines equal but for such t tokens."""
    m, c = _line(d.mc_unit).split(b" "), _line(d.cc_unit).split(b" ")
    if len(m) != len(c):
        return False
    differing = [(f, g) for f, g in zip(m, c) if f != g]
    wrapped = [(f, g) for f, g in differing if f[:1] == b"t" == g[:1]]
    return bool(wrapped) and all(f[1:].isdigit() and int(f[1:]) >= 1 << 31 and g == b"t0" for f, g in wrapped) and \
        all(f[:1] == b"c" == g[:1] for f, g in differing if (f, g) not in wrapped)


def _long_get_key(d):
    """A get/gets/gat/gats with a key over 250 bytes: memcached adds an empty
    line after its CLIENT_ERROR and drops the replies still queued before it."""
    if b"CLIENT_ERROR bad command line format\r\n\r\n" not in d.mc.raw:
        return False
    for line in d.cmd.split(b"\n"):
        line = line[:-1] if line.endswith(b"\r") else line  # one \r ends a line; another is key
        words = [w for w in line.split(b" ") if w]
        if words and words[0] in (b"get", b"gets", b"gat", b"gats") and any(len(w) > 250 for w in words[1:]):
            return True
    return False


def _counter_in_place(d):
    """incr/decr/ma: memcached rewrites a counter in place (padded with
    spaces, keeping the item's base64-key mark) only when no reply still in
    flight holds the item, else it makes a new item; corecache always
    rewrites in place. Same value but for spaces, after such a command."""
    labels = d.label.split("+")
    if not any(l.startswith(("incr.", "decr.", "ma.")) for l in labels):
        return False
    mt, ct = _line(d.mc_unit).split(b" "), _line(d.cc_unit).split(b" ")
    if mt[:1] == [b"ME"] == ct[:1] and len(mt) == len(ct):
        # The new item memcached made is not marked fetched.
        return all(f == g or f.split(b"=")[0] in (b"fetch", b"cls", b"size", b"cas", b"exp", b"la")
                   for f, g in zip(mt, ct))
    m, c = d.mc_unit.split(b"\r\n"), d.cc_unit.split(b"\r\n")
    if len(m) < 2 or len(c) < 2:
        return False
    if m[1].replace(b" ", b"") != c[1].replace(b" ", b""):
        return False
    # The rewritten item may differ in its padding (VA and s sizes), in
    # keeping a base64-key mark (k, b) and, when memcached made a new item
    # (a longer number), in the CAS an E and the TTL a T gave: memcached
    # sets those on the item it replaced.
    mt = [t for t in m[0].split(b" ") if t != b"b"]
    ct = [t for t in c[0].split(b" ") if t != b"b"]
    return len(mt) == len(ct) and mt[:1] == ct[:1] and (m[1] != c[1] or mt != ct) and \
        all(f == g or f[:1] == g[:1] and f[:1] in (b"c", b"k", b"s", b"t") or f.isdigit() and g.isdigit()
            for f, g in zip(mt[1:], ct[1:]))


def _ma_ttl_lost(d):
    """The same memcached behaviour seen from outside: an ma with T on an
    item that a reply earlier in the batch still holds is rewritten as a new
    item, and T lands on the old one, so memcached's item keeps its TTL."""
    labels = d.label.split("+")
    if not any(l.startswith("ma.") for l in labels) or not re.search(rb"(^|\n)ma [^\r\n]* T-?\d", d.cmd):
        return False
    if d.why.startswith("state probe"):
        return True  # memcached's item kept its TTL; corecache's expired
    answers = {(b"TOUCHED\r\n", b"NOT_FOUND\r\n"), (b"HD\r\n", b"EN\r\n")}
    return (d.mc_unit, d.cc_unit) in answers or (d.mc_unit.startswith(b"VALUE ") and d.cc_unit == b"END\r\n")


ALLOWLIST = [
    Allowed("ma-ttl-lost", "README: memcached's ma T on an item a reply holds lands on the replaced item",
            _ma_ttl_lost),
    Allowed("me-layout", "README: me's cls= and size= describe corecache's own item layout", _me_internal),
    Allowed("me-base64", "README: memcached 1.6.45's `me <key> b` never decodes the key (bug not copied)", _me_base64),
    Allowed("wrapped-ttl", "README: memcached prints a passed TTL as a wrapped 32-bit number (bug not copied)",
            _wrapped_ttl),
    Allowed("long-get-key", "README: memcached's extra empty line (and lost replies) after a too-long get key",
            _long_get_key),
    Allowed("counter-in-place", "README: memcached rewrites a counter in place only when no reply holds it and "
            "it does not grow; else its E and T land on the replaced item",
            _counter_in_place),
]

# Tolerances for timing fields.  TTLs tick on second boundaries that the two
# servers do not share.  memcached only refreshes an item's last-access time
# when it is older than ITEM_UPDATE_INTERVAL (60 s), so `l`/`la` may lag by up
# to a minute there.
TTL_TOLERANCE = 2
LAST_ACCESS_TOLERANCE = 62

META_CODES = {b"VA", b"HD", b"EN", b"NF", b"NS", b"EX"}


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process on a free port; its output goes to a log file."""

    def __init__(self, name, argv_for_port, logdir):
        self.name = name
        self.argv_for_port = argv_for_port
        self.logdir = logdir
        self.proc = None
        self.port = None
        self.starts = 0

    def start(self):
        last = None
        for _ in range(5):  # the port may be taken between probe and bind
            self.port = free_port()
            self.starts += 1
            self.log = os.path.join(self.logdir, "%s.%d.log" % (self.name, self.starts))
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(self.argv_for_port(self.port), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
            deadline = time.time() + 10
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                        s.sendall(b"mn\r\n")
                        if s.recv(16).startswith(b"MN"):
                            return
                except OSError:
                    time.sleep(0.05)
            last = "exit %s" % self.proc.poll()
            self.stop()
        with open(self.log, "rb") as f:
            tail = f.read()[-2000:].decode("utf-8", "replace")
        raise RuntimeError("%s did not start (%s); log %s:\n%s" % (self.name, last, self.log, tail))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# Both servers get room enough never to evict: eviction is not under test,
# and corecache splits -m between its cores where memcached has one pool
# (README), so with -t 2 one core could evict where memcached does not.
MEMORY_MB = "1024"


def memcached_argv(path, threads):
    def argv(port):
        a = [path, "-U", "0", "-l", "127.0.0.1", "-p", str(port), "-t", str(threads), "-m", MEMORY_MB,
             "-o", "no_lru_maintainer,no_lru_crawler"]
        if os.geteuid() == 0:
            a += ["-u", "root"]
        return a
    return argv


def corecache_argv(path, threads):
    return lambda port: [path, "-p", str(port), "-l", "127.0.0.1", "-t", str(threads), "-m", MEMORY_MB]


# ---------------------------------------------------------------------------
# Replies: a stream of units, each a line or a line with a data block
# ---------------------------------------------------------------------------


class Unit:
    __slots__ = ("line", "data", "trailer")

    def __init__(self, line, data=None, trailer=None):
        self.line, self.data, self.trailer = line, data, trailer

    def raw(self):
        if self.data is None:
            return self.line + b"\r\n"
        return self.line + b"\r\n" + self.data + self.trailer


def data_length(line):
    """Length of the data block that follows a reply line, or None."""
    toks = line.split(b" ")
    if toks[0] == b"VALUE" and len(toks) >= 4:
        n = toks[3]
    elif toks[0] == b"VA" and len(toks) >= 2:
        n = toks[1]
    else:
        return None
    return int(n) if n.isdigit() else None


def parse_units(buf, pos, units):
    """Parse complete units from buf[pos:]; return (new pos, saw final MN)."""
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return pos, False
        line = bytes(buf[pos:eol])
        n = data_length(line)
        if n is None:
            units.append(Unit(line))
            pos = eol + 2
            if line == b"MN":
                return pos, True
            continue
        end = eol + 2 + n + 2
        if end > len(buf):
            return pos, False
        units.append(Unit(line, bytes(buf[eol + 2:eol + 2 + n]), bytes(buf[end - 2:end])))
        pos = end


class Reply:
    def __init__(self):
        self.raw = b""
        self.units = []
        self.closed = False   # the server closed (or reset) the connection
        self.timeout = False  # no final MN within the time limit
        self.probe_at = 0     # units from here on answer the state probe
        self.probe_raw_at = 0
        self.crashed = False  # the server process is gone

    def describe(self, where=None):
        """The batch's reply; of the probe's, only the unit at `where`."""
        if self.probe_raw_at < len(self.raw):
            s = trunc(self.raw[:self.probe_raw_at])
            if where is not None and self.probe_at <= where < len(self.units):
                s += " then, from the state probe: %s" % trunc(self.units[where].raw())
            elif where is not None and where >= len(self.units):
                s += " then, from the state probe: %s" % trunc(self.raw[self.probe_raw_at:])
        else:
            s = trunc(self.raw)
        if self.crashed:
            s += " <server crashed>"
        elif self.closed:
            s += " <closed>"
        elif self.timeout:
            s += " <timeout>"
        return s


def trunc(b, limit=600):
    if len(b) <= limit:
        return repr(b)
    return "%r...<%d bytes>...%r" % (b[:limit * 2 // 3], len(b), b[-limit // 4:])


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def exchange(self, chunks, timeout):
        """Send chunks (list of (bytes, pause seconds after)), read until the
        final MN, EOF or timeout.  Reads while writing so neither side blocks
        on a full socket buffer."""
        rep = Reply()
        buf = bytearray()
        pos, done = 0, False
        deadline = time.time() + timeout
        sock = self.sock

        def read_some():
            nonlocal pos, done
            try:
                d = sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError:
                rep.closed = True
                return
            if not d:
                rep.closed = True
                return
            buf.extend(d)
            pos, done = parse_units(buf, pos, rep.units)

        for data, pause in chunks:
            view = memoryview(data)
            while view and not rep.closed:
                left = deadline - time.time()
                if left <= 0:
                    rep.timeout = True
                    break
                r, w, _ = select.select([sock], [sock], [], left)
                if r:
                    read_some()
                if w and not rep.closed:
                    try:
                        view = view[sock.send(view):]
                    except BlockingIOError:
                        pass
                    except OSError:
                        rep.closed = True
            if rep.closed or rep.timeout:
                break
            if pause:
                time.sleep(pause)
        while not (done or rep.closed or rep.timeout):
            left = deadline - time.time()
            if left <= 0:
                rep.timeout = True
                break
            r, _, _ = select.select([sock], [], [], left)
            if r:
                read_some()
        if done:
            rep.timeout = False
        rep.raw = bytes(buf)
        # Bytes that did not parse into a unit (a torn reply) are kept as a
        # pseudo unit so they take part in the comparison.
        if pos < len(buf):
            rep.units.append(Unit(b"<partial> " + bytes(buf[pos:])))
        return rep


# ---------------------------------------------------------------------------
# CAS book-keeping
# ---------------------------------------------------------------------------


class CasRef:
    """A CAS token resolved when the command is rendered for one server:
    'seen0'/'seen1' = latest/previous CAS that server showed for key `ident`;
    otherwise `lit` (same bytes to both)."""

    __slots__ = ("kind", "ident", "lit")

    def __init__(self, kind, ident=None, lit=None):
        self.kind, self.ident, self.lit = kind, ident, lit


# A CAS a server never handed out, used when a reference has nothing to
# resolve to: far above both servers' counters and the E values generated
# ([2^40, 2^41)), below the random bogus ones ([2^50, 2^63)).
UNSEEN_CAS = b"999999999999999"


class CasBook:
    """Per-key map memcached CAS -> corecache CAS (and back, so one corecache
    CAS cannot stand for two memcached ones), the CAS values each server showed
    per key (for CasRef), and the client-chosen E values, which must come back
    identical from both."""

    def __init__(self):
        self.explicit = set()
        self.reset()

    def reset(self):
        self.fwd = {}
        self.back = {}
        self.seen = ({}, {})  # per side: ident -> list of CAS bytes

    def resolve(self, side, ref):
        if ref.kind in ("seen0", "seen1"):
            seen = self.seen[side].get(ref.ident, [])
            i = 1 if ref.kind == "seen0" else 2
            return seen[-i] if len(seen) >= i else UNSEEN_CAS
        return ref.lit

    def check(self, ident, m, c):
        """Return None if CAS m (memcached) and c (corecache) correspond."""
        if not (m.isdigit() and c.isdigit()):
            return None if m == c else "cas %r vs %r" % (m, c)
        mi, ci = int(m), int(c)
        if mi in self.explicit or ci in self.explicit:
            return None if mi == ci else "cas %d vs %d (client-chosen E value)" % (mi, ci)
        fwd = self.fwd.setdefault(ident, {})
        back = self.back.setdefault(ident, {})
        if mi in fwd:
            return None if fwd[mi] == ci else "cas %d maps to %d earlier, now %d" % (mi, fwd[mi], ci)
        if ci in back:
            return "corecache cas %d already stood for memcached cas %d, now %d" % (ci, back[ci], mi)
        fwd[mi], back[ci] = ci, mi
        return None

    def observe(self, ident, m, c):
        for side, v in ((0, m), (1, c)):
            lst = self.seen[side].setdefault(ident, [])
            if not lst or lst[-1] != v:
                lst.append(v)
                del lst[:-4]


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------


def loose_int(m, c, tol, minus_one_exact):
    try:
        mi, ci = int(m), int(c)
    except ValueError:
        return m == c
    if minus_one_exact and (mi == -1 or ci == -1):
        return mi == ci
    return abs(mi - ci) <= tol


def meta_ident(flags):
    """Key identity of a meta reply: its k token, base64-decoded if the reply
    carries the b flag (so `foo` and `Zm9v b` are one item)."""
    key = next((f[1:] for f in flags if f[:1] == b"k"), None)
    if key is not None and b"b" in flags:
        try:
            key = base64.b64decode(key, validate=True)
        except ValueError:
            pass
    return key


def compare_line(ml, cl, book, obs):
    """Compare one reply line; return None or a reason.  CAS pairs that
    matched are appended to obs as (ident, mc cas, cc cas)."""
    if ml == cl:
        mt = ml.split(b" ")
        if mt[0] == b"VALUE" and len(mt) == 5:
            book.check(mt[1], mt[4], mt[4])
            obs.append((mt[1], mt[4], mt[4]))
        elif mt[0] in META_CODES:
            ident = meta_ident(mt[1:])
            for f in mt[1:]:
                if f[:1] == b"c" and ident is not None:
                    book.check(ident, f[1:], f[1:])
                    obs.append((ident, f[1:], f[1:]))
        return None
    mt, ct = ml.split(b" "), cl.split(b" ")
    if len(mt) != len(ct) or mt[0] != ct[0]:
        return "lines differ"
    head = mt[0]
    if head == b"VALUE" and len(mt) == 5:
        if mt[:4] != ct[:4]:
            return "VALUE header differs"
        why = book.check(mt[1], mt[4], ct[4])
        if why:
            return why
        obs.append((mt[1], mt[4], ct[4]))
        return None
    if head in META_CODES:
        start = 2 if head == b"VA" else 1
        if mt[:start] != ct[:start]:
            return "status/size differs"
        ident = meta_ident(mt[start:])
        for f, g in zip(mt[start:], ct[start:]):
            if f == g:
                if f[:1] == b"c" and ident is not None:
                    obs.append((ident, f[1:], g[1:]))
                continue
            if f[:1] != g[:1] or not f:
                return "flag %r vs %r" % (f, g)
            letter = f[:1]
            if letter == b"c":
                why = book.check(ident, f[1:], g[1:])
                if why:
                    return why
                obs.append((ident, f[1:], g[1:]))
            elif letter == b"t":
                if not loose_int(f[1:], g[1:], TTL_TOLERANCE, True):
                    return "ttl %r vs %r" % (f, g)
            elif letter == b"l":
                if not loose_int(f[1:], g[1:], LAST_ACCESS_TOLERANCE, True):
                    return "last access %r vs %r" % (f, g)
            else:
                return "flag %r vs %r" % (f, g)
        return None
    if head == b"ME" and len(mt) >= 2:
        if mt[1] != ct[1]:
            return "ME key differs"
        for f, g in zip(mt[2:], ct[2:]):
            if f == g:
                continue
            fk, _, fv = f.partition(b"=")
            gk, _, gv = g.partition(b"=")
            if fk != gk:
                return "ME field %r vs %r" % (f, g)
            if fk == b"exp" and loose_int(fv, gv, TTL_TOLERANCE, True):
                continue
            if fk == b"la" and loose_int(fv, gv, LAST_ACCESS_TOLERANCE, False):
                continue
            if fk == b"cas" and not book.check(b"me:" + mt[1], fv, gv):
                continue
            return "ME field %r vs %r" % (f, g)
        return None
    return "lines differ"


PADDED_NUMBER = re.compile(rb"\d+ +\Z")


def unpad_numbers(mu, cu):
    """memcached may answer incr/decr in place, padding a shorter number
    with spaces (protocol.txt: it "MAY be space-padded"), and whether it
    does depends on whether a reply still in flight holds the item: timing.
    So a number equal but for trailing spaces is compared unpadded (value,
    its length and an `s` flag)."""
    if mu.data is None or cu.data is None or mu.data == cu.data:
        return mu, cu
    if not (PADDED_NUMBER.match(mu.data) or PADDED_NUMBER.match(cu.data)):
        return mu, cu
    if mu.data.rstrip(b" ") != cu.data.rstrip(b" ") or not mu.data.rstrip(b" ").isdigit():
        return mu, cu

    def strip(u):
        d = u.data.rstrip(b" ")
        old, new = str(len(u.data)).encode(), str(len(d)).encode()
        toks = u.line.split(b" ")
        if toks[0] == b"VALUE" and len(toks) >= 4:
            toks[3] = new
        elif toks[0] == b"VA":
            toks = [toks[0], new] + [b"s" + new if t == b"s" + old else t for t in toks[2:]]
        return Unit(b" ".join(toks), d, u.trailer)
    return strip(mu), strip(cu)


def compare_replies(mr, cr, book):
    """Return None, or (index of the first differing unit, reason)."""
    if mr.crashed or cr.crashed:
        return 0, "server crashed"
    both_closed = mr.closed and cr.closed
    n = min(len(mr.units), len(cr.units))
    for i in range(n):
        mu, cu = unpad_numbers(mr.units[i], cr.units[i])
        obs = []
        if (mu.data is None) != (cu.data is None):
            why = "lines differ"
        else:
            why = compare_line(mu.line, cu.line, book, obs)
            if why is None and mu.data is not None and (mu.data != cu.data or mu.trailer != cu.trailer):
                why = "data differs"
        if why:
            return i, why
        for o in obs:
            book.observe(*o)
    if both_closed:
        # A closing server may drop replies it had queued; only the fact
        # that both closed is compared past the common prefix.
        return None
    if len(mr.units) != len(cr.units):
        return n, "reply count differs (%d vs %d units)" % (len(mr.units), len(cr.units))
    if mr.closed != cr.closed:
        return n, "only %s closed the connection" % ("memcached" if mr.closed else "corecache")
    if mr.timeout != cr.timeout:
        return n, "only %s timed out" % ("memcached" if mr.timeout else "corecache")
    return None


def shape(unit):
    """Coarse form of a reply unit for grouping: keys, opaques and numbers
    folded, meta flags reduced to their letters."""
    if unit is None:
        return "<none>"
    toks = unit.line.split(b" ")
    if toks[0] in META_CODES:
        toks = toks[:1] + [b"N" if toks[0] == b"VA" and i == 1 else t[:1] for i, t in enumerate(toks) if i]
    elif toks[0] in (b"VALUE", b"ME") and len(toks) > 1:
        toks[1] = b"K"
    s = b" ".join(toks)[:70].decode("latin-1")
    return re.sub(r"\d+", "N", s)


# ---------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------

# Values never contain "m", so no piece of a value read as a command line can
# be "mn" and end a batch early; they contain no space either, so such a piece
# is never a storage command that would swallow what follows.
VALUE_CHARS = b"abcdefghijklnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~"
ALNUM = b"abcdefghijklnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

PLAIN_KEYS = [b"a", b"b", b"c", b"foo", b"k:1", b"user_42", b"num", b"num2",
              b"K" * 40, b"x" * 200, b"L" * 250]
PLAIN_WEIGHTS = [8, 8, 6, 6, 4, 4, 6, 4, 2, 2, 2]
BINARY_KEYS = [b"\x00\x01\xfe\xff", b"bin\x00key", bytes(range(60, 246))]  # last: 186 bytes, 248 in base64
TOO_LONG_KEY = b"T" * 251
TOO_LONG_B64 = base64.b64encode(b"\xab" * 189)  # 252 characters
BAD_B64 = [b"Zm9", b"!!!!", b"Zm9v=", b"===="]

ITEM_MAX = 1024 * 1024

EXPTIMES = [b"0", b"0", b"0", b"3600", b"86400", b"5000", b"2592000", b"2592001", b"-1", b"-100", b"2000000000"]
BAD_NUMBERS = [b"abc", b"1.5", b"-", b"+86400", b"0x10", b"4294967296", b"99999999999999999999"]
FLAGS = [b"0", b"0", b"1", b"4294967295", b"65535", b"123"]
BAD_FLAGS = [b"-1", b"4294967296", b"abc", b"1.0"]
DELTAS = [b"1", b"1", b"5", b"100", b"0", b"18446744073709551615"]
BAD_DELTAS = [b"18446744073709551616", b"-1", b"abc", b"1.0", b"99999999999999999999"]
NUMERIC_VALUES = [b"0", b"1", b"99", b"100", b"1000", b"18446744073709551615", b"18446744073709551614",
                  b"-1", b"12abc", b"007", b"", b" 5", b"123456789012345678901", b"10 "]
MISSPELT_NOREPLY = [b"noreplY", b"norepl", b"noreply2", b"NOREPLY", b"no_reply", b"noreplyy"]
OPAQUES = [b"1", b"abc", b"X" * 31, b"o-p_q"]  # memcached refuses 32 (protocol.txt: "up to 32")
RECACHE = [b"10", b"1000", b"100000", b"3000000", b"1000000000"]


class Cmd:
    """One generated command: label ('family.variant'), pieces (bytes or
    CasRef), solo (gets a batch of its own: long lines, huge values), last
    (must end its batch: may close the connection)."""

    __slots__ = ("label", "pieces", "solo", "last")

    def __init__(self, label, pieces, solo=False, last=False):
        self.label, self.pieces, self.solo, self.last = label, pieces, solo, last

    def render(self, side, book):
        return b"".join(p if isinstance(p, bytes) else book.resolve(side, p) for p in self.pieces)


def line(*tokens, sep=b" ", end=b"\r\n"):
    """Pieces of a command line; a token is bytes or a list of pieces."""
    out = []
    for i, t in enumerate(tokens):
        if i:
            out.append(sep)
        out.extend(t if isinstance(t, list) else [t])
    out.append(end)
    return out


class Generator:
    def __init__(self, seed, book):
        self.rng = random.Random(seed)
        self.book = book  # only to register E values

    # -- small helpers -------------------------------------------------------

    def chance(self, p):
        return self.rng.random() < p

    def pick(self, seq):
        return self.rng.choice(seq)

    def plain_key(self):
        return self.rng.choices(PLAIN_KEYS, PLAIN_WEIGHTS)[0]

    def meta_key(self):
        """(token, identity, uses b flag)."""
        r = self.rng.random()
        if r < 0.12:
            k = self.plain_key()
            return base64.b64encode(k), k, True
        if r < 0.18:
            k = self.pick(BINARY_KEYS)
            return base64.b64encode(k), k, True
        k = self.plain_key()
        return k, k, False

    def exptime(self):
        return self.pick(EXPTIMES)

    def value(self, key=None, line_safe=False):
        """A value.  line_safe: under 2000 bytes, for commands a server may
        reject so that it reads the value as a command line: memcached
        closes the connection on a line of over 2048 bytes if its read ends
        inside it, which depends on segmentation, not on the protocol."""
        rng = self.rng
        if key in (b"num", b"num2") and self.chance(0.7) or self.chance(0.05):
            return self.pick(NUMERIC_VALUES)
        r = rng.random()
        if r < 0.05:
            n = 0
        elif r < 0.6:
            n = rng.randint(1, 20)
        elif r < 0.9:
            n = rng.randint(21, 200)
        else:
            n = rng.randint(201, 1999 if line_safe else 5000)
        v = bytearray(rng.choice(VALUE_CHARS) for _ in range(n))
        if n and self.chance(0.1):  # bytes a line-based reader would trip on
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(n)
                v[i:i + 1] = self.pick([b"\r\n", b"\n", b"\r", b"\x00", b"\xff", b"\x80"])
        return bytes(v)

    def noreply(self):
        r = self.rng.random()
        if r < 0.15:
            return [b"noreply"]
        if r < 0.2:
            return [self.pick(MISSPELT_NOREPLY)]
        return []

    def cas_ref(self, ident, for_invalidate=False):
        """A CAS token: mostly one this key showed, sometimes another key's
        or a bogus one.  Bogus values are far above any counter so they
        cannot match by chance."""
        r = self.rng.random()
        if r < 0.55:
            return CasRef("seen0", ident)
        if r < 0.70:
            return CasRef("seen1", ident)
        if for_invalidate:
            # `I` compares CAS order; only order-preserving tokens.
            return CasRef("lit", lit=b"0") if r < 0.85 else CasRef("seen0", ident)
        if r < 0.78:
            return CasRef("seen0", self.plain_key())
        return CasRef("lit", lit=self.pick([
            b"0", str(self.rng.randrange(1 << 50, 1 << 63)).encode(), b"18446744073709551615",
            b"18446744073709551616", b"-1", b"abc"]))

    def e_value(self):
        v = self.pick([0, (1 << 64) - 1] + [self.rng.randrange(1 << 40, 1 << 41)] * 6)
        self.book.explicit.add(v)
        return str(v).encode()

    # -- classic commands ------------------------------------------------------

    def data_block(self, value):
        """Data block pieces and label suffix: usually well formed, sometimes
        with a bad terminator or more bytes than declared.  Never fewer bytes
        than the server will read, so the batch's closing mn is not eaten."""
        r = self.rng.random()
        if r < 0.04:
            # Each ends in LF: a server that reads the rest as a line must
            # not join it to the next command (or the batch's mn).
            return [value + self.pick([b"X\n", b"\n\n", b" \n", b"\r\r\n"])], ".bad_chunk"
        if r < 0.07:
            extra = bytes(self.pick(ALNUM) for _ in range(self.rng.randint(1, 6)))
            return [value + extra + b"\r\n"], ".long_chunk"
        return [value + b"\r\n"], ""

    def storage(self):
        rng = self.rng
        cmd = self.pick([b"set", b"set", b"set", b"add", b"replace", b"append", b"prepend", b"cas"])
        key = self.plain_key()
        malformed = rng.random() < 0.22
        value = self.value(key, line_safe=malformed)
        flags, exp, n = self.pick(FLAGS), self.exptime(), str(len(value)).encode()
        extra = [self.cas_ref(key)] if cmd == b"cas" else []
        label = cmd.decode() + ".valid"
        toks = [cmd, key, flags, exp, n] + extra
        if malformed:
            m = rng.randrange(8)
            if m == 0:
                toks = toks[:rng.randint(1, len(toks) - 1)]
                label = cmd.decode() + ".missing_args"
            elif m == 1:
                toks = toks + self.noreply() + [self.pick([b"extra", b"0", b"noreply"])]
                label = cmd.decode() + ".extra_token"
            elif m == 2:
                toks[2] = self.pick(BAD_FLAGS)
                label = cmd.decode() + ".bad_flags"
            elif m == 3:
                toks[3] = self.pick(BAD_NUMBERS)
                label = cmd.decode() + ".bad_exptime"
            elif m == 4:
                toks[4] = self.pick([b"-1", b"abc", b"1.0", b"4294967296", b"-0"])
                label = cmd.decode() + ".bad_length"
            elif m == 5:
                toks[1] = TOO_LONG_KEY
                label = cmd.decode() + ".key_too_long"
            elif m == 6 and cmd == b"cas":
                toks[5] = CasRef("lit", lit=self.pick([b"abc", b"-1", b"18446744073709551616", b"1.5"]))
                label = "cas.bad_cas"
            else:
                toks[4] = str(len(value) + rng.choice([-1, 1])).encode() if value else b"1"
                label = cmd.decode() + ".wrong_length"
            # One spare CRLF: a length one too long must not eat the batch's mn.
            data = [value + b"\r\n" + (b"\r\n" if label.endswith("wrong_length") else b"")]
        else:
            nr = self.noreply()
            if nr:
                label = cmd.decode() + (".noreply" if nr == [b"noreply"] else ".noreply_misspelt")
            toks = toks + nr
            data, suffix = self.data_block(value)
            label += suffix
        return Cmd(label, line(*toks) + data)

    def huge(self):
        """Values around and over the item size limit (1 MB on both)."""
        cmd = self.pick([b"set", b"set", b"add", b"append", b"ms"])
        n = self.pick([ITEM_MAX + 1, ITEM_MAX + 100, 2 * ITEM_MAX, 600 * 1024, ITEM_MAX - 100, ITEM_MAX - 48])
        key = self.pick([b"a", b"big", b"foo"])
        data = [b"Q" * n + b"\r\n"]
        if cmd == b"ms":
            return Cmd("ms.huge%d" % (n // 1024), line(b"ms", key, str(n).encode(), b"T0") + data, solo=True)
        return Cmd("%s.huge%d" % (cmd.decode(), n // 1024),
                   line(cmd, key, b"0", b"0", str(n).encode()) + data, solo=True)

    def retrieval(self):
        rng = self.rng
        cmd = self.pick([b"get", b"get", b"gets", b"gets", b"gat", b"gats"])
        keys = [self.plain_key() for _ in range(rng.choice([1, 1, 1, 2, 3, 5]))]
        label = cmd.decode() + (".valid" if len(keys) == 1 else ".multi")
        toks = [cmd] + ([self.exptime()] if cmd in (b"gat", b"gats") else []) + keys
        if rng.random() < 0.15:
            m = rng.randrange(5)
            if m == 0:
                toks = [cmd]
                label = cmd.decode() + ".no_key"
            elif m == 1:
                toks = toks + [TOO_LONG_KEY]
                label = cmd.decode() + ".key_too_long"
            elif m == 2 and cmd in (b"gat", b"gats"):
                toks = [cmd, self.pick(BAD_NUMBERS[:4])] + keys
                label = cmd.decode() + ".bad_exptime"
            elif m == 3 and cmd in (b"gat", b"gats"):
                toks = [cmd, self.exptime()]
                label = cmd.decode() + ".no_key"
            else:
                toks = toks + [b"noreply"]
                label = cmd.decode() + ".noreply_key"
        # memcached answers a too-long key in a multi-key get by dropping the
        # replies it still has queued, earlier commands' included: how many
        # depends on timing, so such a get is sent alone.
        return Cmd(label, line(*toks), solo=label.endswith("key_too_long"))

    def delete(self):
        key = self.plain_key()
        toks, label = [b"delete", key] + self.noreply(), "delete.valid"
        if self.chance(0.25):
            m = self.rng.randrange(4)
            toks, label = [
                ([b"delete"], "delete.no_key"),
                ([b"delete", key, b"0"], "delete.legacy_zero"),
                ([b"delete", key, b"5"], "delete.legacy_time"),
                ([b"delete", key, b"0", b"noreply", b"x"], "delete.extra_token"),
            ][m]
        return Cmd(label, line(*toks))

    def arith(self):
        cmd = self.pick([b"incr", b"decr"])
        key = self.pick([b"num", b"num", b"num2", b"a"]) if self.chance(0.8) else self.plain_key()
        toks, label = [cmd, key, self.pick(DELTAS)] + self.noreply(), cmd.decode() + ".valid"
        if self.chance(0.2):
            m = self.rng.randrange(3)
            if m == 0:
                toks, label = [cmd, key, self.pick(BAD_DELTAS)], cmd.decode() + ".bad_delta"
            elif m == 1:
                toks, label = [cmd, key], cmd.decode() + ".missing_args"
            else:
                toks, label = [cmd, TOO_LONG_KEY, b"1"], cmd.decode() + ".key_too_long"
        return Cmd(label, line(*toks))

    def touch(self):
        key = self.plain_key()
        toks, label = [b"touch", key, self.exptime()] + self.noreply(), "touch.valid"
        if self.chance(0.2):
            toks, label = self.pick([([b"touch", key], "touch.missing_args"),
                                     ([b"touch", key, self.pick(BAD_NUMBERS[:4])], "touch.bad_exptime"),
                                     ([b"touch"], "touch.no_key")])
        return Cmd(label, line(*toks))

    def misc(self):
        r = self.rng.random()
        if r < 0.15:
            toks = self.pick([[b"flush_all"], [b"flush_all", b"0"], [b"flush_all", b"noreply"],
                              [b"flush_all", b"0", b"noreply"], [b"flush_all", b"-1"]])
            return Cmd("flush_all.valid", line(*toks))
        if r < 0.2:
            return Cmd("flush_all.bad", line(b"flush_all", self.pick([b"abc", b"1.5", b"0 0", b"noreplyx"])))
        if r < 0.3:
            toks = self.pick([[b"verbosity", b"0"], [b"verbosity", b"1"], [b"verbosity", b"0", b"noreply"],
                              [b"verbosity"], [b"verbosity", b"abc"], [b"verbosity", b"0", b"1", b"2"]])
            return Cmd("verbosity." + ("valid" if len(toks) in (2, 3) and toks[1].isdigit() else "bad"),
                       line(*toks))
        if r < 0.36:
            return Cmd("quit." + ("valid" if r < 0.33 else "extra"),
                       line(b"quit") if r < 0.33 else line(b"quit", b"now"), last=True)
        # Lines that are not commands at all.
        k = self.plain_key()
        raw, label = self.pick([
            (b"\r\n", "junk.empty_line"), (b"   \r\n", "junk.spaces"), (b"\t\r\n", "junk.tab"),
            (b"\n", "junk.bare_lf"), (b"foo bar\r\n", "junk.unknown"), (b"GET " + k + b"\r\n", "junk.uppercase"),
            (b"sets " + k + b"\r\n", "junk.unknown"), (b" get " + k + b"\r\n", "junk.leading_space"),
            (b"get " + k + b" \r\n", "junk.trailing_space"), (b"get  " + k + b"\r\n", "junk.double_space"),
            (b"get\t" + k + b"\r\n", "junk.tab_separator"), (b"get " + k + b"\n", "junk.lf_only"),
            (b"get " + k + b"\r\r\n", "junk.cr_cr_lf"), (b"\x00\r\n", "junk.nul"),
            (b"m\r\n", "junk.short_meta"), (b"mz " + k + b"\r\n", "junk.unknown_meta"),
            (b"mgg " + k + b"\r\n", "junk.unknown_meta"), (b" mg " + k + b" v\r\n", "junk.leading_space_meta"),
            (b"mg  " + k + b"  v\r\n", "junk.double_space_meta"), (b"mg " + k + b" v \r\n", "junk.trailing_space_meta"),
            (b"mg\t" + k + b" v\r\n", "junk.tab_meta"), (b"mg " + k + b" v\n", "junk.lf_only_meta"),
        ])
        return Cmd(label, [raw])

    def long_line(self):
        """Lines over memcached's 2048-byte no-newline threshold, sent alone
        in one write so both servers see the whole line at once."""
        r = self.rng.random()
        if r < 0.4:
            keys = [self.plain_key() for _ in range(self.rng.randint(300, 600))]
            return Cmd("get.long_multi", line(b"get", *keys), solo=True)
        if r < 0.7:
            return Cmd("junk.long_line", [b"x" * self.rng.randint(2100, 6000) + b"\r\n"], solo=True, last=True)
        k = b"Z" * self.rng.randint(2100, 4000)
        return Cmd("set.very_long_key", line(b"set", k, b"0", b"0", b"1") + [b"v\r\n"], solo=True, last=True)

    # -- meta commands ---------------------------------------------------------

    def ttl_token(self, letter):
        return letter + self.pick(EXPTIMES)

    def meta_flags(self, cmd, ident, b64):
        """Random valid flags for a meta command, as tokens."""
        rng = self.rng
        if cmd == b"mg":
            pool = [b"v"] * 6 + [b"k", b"c", b"f", b"s", b"t", b"t", b"h", b"l", b"q", b"u", b"O", b"T", b"N",
                                  b"R", b"E", b"C", b"P"]
        elif cmd == b"ms":
            pool = [b"c", b"k", b"s", b"q", b"O", b"F", b"T", b"T", b"M", b"M", b"N", b"C", b"E", b"I"]
        elif cmd == b"md":
            pool = [b"C", b"E", b"I", b"k", b"O", b"q", b"T", b"x"]
        else:  # ma
            pool = [b"N", b"J", b"D", b"D", b"T", b"M", b"M", b"O", b"q", b"t", b"c", b"v", b"v", b"k", b"C", b"E"]
        chosen = []
        for _ in range(rng.choice([0, 1, 2, 2, 3, 3, 4, 5, 6])):
            f = self.pick(pool)
            if f not in chosen:
                chosen.append(f)
        if b"c" in chosen and b"k" not in chosen:
            chosen.append(b"k")  # CAS is mapped per key: make the reply name it
        invalidate = b"I" in chosen
        toks = []
        for f in chosen:
            if f == b"O":
                toks.append(b"O" + self.pick(OPAQUES))
            elif f in (b"T", b"N"):
                toks.append(self.ttl_token(f))
            elif f == b"R":
                toks.append(b"R" + self.pick(RECACHE))
            elif f == b"E":
                toks.append(b"E" + self.e_value())
            elif f == b"C":
                toks.append([b"C", self.cas_ref(ident, invalidate)])
            elif f == b"F":
                toks.append(b"F" + self.pick(FLAGS))
            elif f == b"P":
                toks.append(self.pick([b"Pfoo/", b"Lbar"]))
            elif f == b"J":
                toks.append(b"J" + self.pick([b"0", b"10", b"18446744073709551615"]))
            elif f == b"D":
                toks.append(b"D" + self.pick(DELTAS))
            elif f == b"M":
                # memcached 1.6.45 takes upper case modes only (lower case: bad_mode)
                modes = [b"E", b"A", b"P", b"R", b"S", b"S"] if cmd == b"ms" else [b"I", b"D", b"+", b"-"]
                toks.append(b"M" + self.pick(modes))
            else:
                toks.append(f)
        if b64:
            toks.insert(rng.randrange(len(toks) + 1), b"b")
        return toks

    def meta_malform(self, cmd, key, toks):
        """One mutation of a meta command's key or flags: (key, toks, name)."""
        rng = self.rng
        m = rng.randrange(10)
        if m == 0:
            return None, [], "no_key"
        if m == 1:
            return TOO_LONG_KEY, toks, "key_too_long"
        if m == 2:
            return self.pick(BAD_B64 + [TOO_LONG_B64]), toks + [b"b"], "bad_base64"
        if m == 3:
            return key, toks + [self.pick([b"!", b"1", b"y", b"G", b"%", b"Y"])], "unknown_flag"
        if m == 4:
            letter = self.pick([b"T", b"N", b"D", b"J", b"F", b"R", b"M", b"C", b"E", b"O"])
            return key, toks + [letter + self.pick([b"", b"abc", b"-5", b"18446744073709551616", b"X" * 33])], \
                "bad_token_" + letter.decode()
        if m == 5:
            f = self.pick([b"v", b"k", b"q", b"T10", b"c", b"O1", b"b", b"s"])
            return key, toks + [f, f], "duplicate_flag"
        if m == 6:
            bad = [b"X", b"z", b"", b"SS"] + ([b"a", b"p", b"e", b"r", b"s"] if cmd == b"ms" else [b"i", b"d"])
            return key, toks + [b"M" + self.pick(bad)], "bad_mode"
        if m == 7:
            return key, toks + [b"vv" if cmd == b"mg" else b"qq"], "flag_with_junk"
        if m == 8:
            return key, [self.pick([b"key2", b"0", b"noreply"])] + toks, "extra_positional"
        return key, toks + [b"O" + b"z" * 40], "long_opaque"

    def meta(self):
        cmd = self.rng.choices([b"mg", b"ms", b"md", b"ma", b"me"], [40, 30, 12, 14, 4])[0]
        key, ident, b64 = self.meta_key()
        if cmd == b"ma" and not b64 and self.chance(0.6):
            key = ident = self.pick([b"num", b"num2"])
        if cmd == b"me":
            toks = [b"b"] if b64 else []
            label = "me.valid"
            if self.chance(0.2):
                key, toks, label = self.pick([(None, [], "me.no_key"), (TOO_LONG_KEY, [], "me.key_too_long"),
                                              (key, toks + [b"v"], "me.extra_flag")])
            return Cmd(label, line(*([b"me"] + ([key] if key is not None else []) + toks)))
        toks = self.meta_flags(cmd, ident, b64)
        name = "valid"
        if self.chance(0.18):
            key, toks, name = self.meta_malform(cmd, key, toks)
        head = [cmd] + ([key] if key is not None else [])
        if cmd != b"ms":
            return Cmd("%s.%s" % (cmd.decode(), name), line(*(head + toks)))
        value = self.value(ident, line_safe=True)  # flag errors may leave it to be read as a line
        n = str(len(value)).encode()
        if key is not None and self.chance(0.12):
            n, name = self.pick([(b"", "no_length"), (b"abc", "bad_length"), (b"-1", "bad_length"),
                                 (str(len(value) + 1).encode(), "wrong_length")])
            data = [value + b"\r\n" + (b"\r\n" if name == "wrong_length" else b"")]
        else:
            data, suffix = self.data_block(value)
            name += suffix
        if name != "valid":
            # memcached keeps the E value of an ms it refuses (bad data chunk,
            # long opaque) and gives it to the connection's next new item,
            # classic ones too: no E in a bad ms keeps that bug out of the test.
            toks = [t for t in toks if not (isinstance(t, bytes) and t.startswith(b"E"))]
        head += [n] if n else []
        return Cmd("ms.%s" % name, line(*(head + toks)) + data)

    # -- batches ---------------------------------------------------------------

    def command(self):
        r = self.rng.random()
        if r < 0.002:
            return self.huge()
        if r < 0.005:
            return self.long_line()
        fam = self.rng.choices([self.storage, self.retrieval, self.delete, self.arith, self.touch,
                                self.meta, self.misc], [24, 17, 5, 7, 3, 40, 4])[0]
        return fam()

    def batch(self, budget):
        """A list of commands (1..16) and how to write them."""
        rng = self.rng
        n = min(budget, rng.choice([1, 1, 1, 2, 3, 4, 4, 6, 8, 10, 12, 16]))
        cmds = []
        while len(cmds) < n:
            c = self.command()
            if c.solo:
                if cmds:
                    continue  # drop it: a solo command must be alone
                return [c], "single"
            cmds.append(c)
            if c.last:
                break
        mode = rng.choices(["single", "per_command", "split"], [70, 15, 15])[0]
        return cmds, mode


# ---------------------------------------------------------------------------
# Running batches on both servers
# ---------------------------------------------------------------------------


class Diff:
    def __init__(self, seed, batch_no, cmds, sent, mc, cc, where, why, label, cmd, min_info):
        self.seed, self.batch_no, self.cmds = seed, batch_no, cmds
        self.sent = sent    # (bytes to memcached, bytes to corecache)
        self.mc, self.cc = mc, cc
        self.where, self.why = where, why
        self.label = label  # generator labels of the minimal reproducer's commands ('?' if none)
        self.cmd = cmd      # the minimal reproducer's bytes as sent to memcached (b'' if none)
        self.min_info = min_info  # minimized reproducer, or None
        self.mc_unit = mc.units[where].raw() if where < len(mc.units) else b""
        self.cc_unit = cc.units[where].raw() if where < len(cc.units) else b""
        self.allowed = None

    def signature(self):
        mu = self.mc.units[self.where] if self.where < len(self.mc.units) else None
        cu = self.cc.units[self.where] if self.where < len(self.cc.units) else None
        ms, cs = shape(mu), shape(cu)
        if mu is None and self.mc.closed:
            ms = "<closed>"
        if cu is None and self.cc.closed:
            cs = "<closed>"
        if mu is None and self.mc.timeout:
            ms = "<timeout>"
        if cu is None and self.cc.timeout:
            cs = "<timeout>"
        probe = " [state probe]" if self.why.startswith("state probe") else ""
        return "%s%s | memcached: %s | corecache: %s" % (self.label, probe, ms, cs)


def chunks_for(data_per_cmd, mode, rng):
    """Write plan for one batch (the commands' bytes, then the sentinel)."""
    whole = b"".join(data_per_cmd) + b"mn\r\n"
    if mode == "single":
        return [(whole, 0)]
    if mode == "per_command":
        return [(d, 0.0003) for d in data_per_cmd] + [(b"mn\r\n", 0)]
    # split at random byte offsets: exercises partial-read handling
    cuts = sorted(rng.sample(range(1, len(whole)), min(len(whole) - 1, rng.randint(1, 6))))
    parts = [whole[i:j] for i, j in zip([0] + cuts, cuts + [len(whole)])]
    return [(p, 0.0005) for p in parts]


class Pair:
    """memcached (reference) and the candidate, one connection to each."""

    def __init__(self, ref, cand, timeout, probe=True):
        self.servers = (ref, cand)
        self.timeout = timeout
        self.conns = [None, None]
        self.book = CasBook()
        self.both_timeouts = []
        self.probe = probe

    def connect(self):
        for i, s in enumerate(self.servers):
            if self.conns[i] is not None:
                self.conns[i].close()
            if not s.alive():
                s.start()
            self.conns[i] = Conn(s.port)

    def run(self, cmds, mode, split_rng, timeout=None):
        """Send one batch to both; return (sent bytes per side, replies, diff or None)."""
        sent, replies = [], []
        for side in (0, 1):
            data = [c.render(side, self.book) for c in cmds]
            sent.append(b"".join(data))
            plan = chunks_for(data, mode, random.Random(split_rng) if mode == "split" else None)
            rep = self.conns[side].exchange(plan, timeout or self.timeout)
            rep.probe_at, rep.probe_raw_at = len(rep.units), len(rep.raw)
            if self.probe and not (rep.closed or rep.timeout):
                # Read back every key without touching it, so a divergence in
                # state shows at the batch that caused it, not batches later.
                p = self.conns[side].exchange([(PROBE_BYTES, 0)], timeout or self.timeout)
                rep.units += p.units
                rep.raw += p.raw
                rep.closed, rep.timeout = p.closed, p.timeout
            if rep.closed and not self.servers[side].alive():
                rep.crashed = True
            replies.append(rep)
        diff = compare_replies(replies[0], replies[1], self.book)
        if diff and diff[0] >= replies[0].probe_at and diff[0] >= replies[1].probe_at:
            diff = (diff[0], "state probe after the batch: " + diff[1])
        if replies[0].timeout and replies[1].timeout:
            # Both waiting: the batch under-sent a data block (a tester bug)
            # or both hang alike.  Counted so a slow run can be explained.
            self.both_timeouts.append(sent[0])
        if replies[0].closed or replies[1].closed or replies[0].timeout or replies[1].timeout:
            self.connect()
        return sent, replies, diff

    def reset(self):
        """Fresh connections and empty caches: state after a difference is
        not comparable.  Every key is also deleted one by one, so a server
        whose flush_all misses some items still starts clean (generated
        flush_all commands are what test flush_all)."""
        self.connect()
        self.book.reset()
        for side in (0, 1):
            rep = self.conns[side].exchange([(RESET_BYTES, 0)], self.timeout)
            if not rep.raw.startswith(b"OK\r\n") or not rep.raw.endswith(b"MN\r\n"):
                raise RuntimeError("%s: reset answered %r" % (self.servers[side].name, rep.raw))


PROBE_BYTES = (b"".join(b"mg %s u q k c f s t v\r\n" % k for k in PLAIN_KEYS + [b"big"]) +
               b"".join(b"mg %s b u q k c f s t v\r\n" % base64.b64encode(k) for k in BINARY_KEYS) + b"mn\r\n")

RESET_BYTES = (b"flush_all\r\n" +
               b"".join(b"delete %s noreply\r\n" % k for k in PLAIN_KEYS + [b"big"]) +
               b"".join(b"md %s b q\r\n" % base64.b64encode(k) for k in BINARY_KEYS) + b"mn\r\n")


# ---------------------------------------------------------------------------
# Minimizing a difference
# ---------------------------------------------------------------------------


class Minimizer:
    """Delta debugging over the commands since the last reset: the smallest
    subsequence that, replayed on fresh state (single writes, one batch per
    original batch), still shows a difference of the same shape."""

    def __init__(self, pair, budget_s, max_trials=120):
        self.pair = pair
        self.deadline = time.time() + budget_s
        self.max_trials = max_trials

    def trial(self, items):
        """items: list of (batch index, Cmd).  Returns (sent, replies, diff, last cmd) or None."""
        self.trials += 1
        self.pair.reset()
        groups = []
        for gi, c in items:
            if groups and groups[-1][0] == gi and not groups[-1][1][-1].last:
                groups[-1][1].append(c)
            else:
                groups.append((gi, [c]))
        for _, cmds in groups:
            sent, reps, diff = self.pair.run(cmds, "single", 0, timeout=min(self.pair.timeout, 1.5))
            if diff:
                return sent, reps, diff, cmds
        return None

    def minimize(self, history, want):
        """history: batches since the last reset, the differing one last.
        want: (mc shape, cc shape) of the difference to keep."""
        self.trials = 0
        if time.time() > self.deadline:
            return None

        def same(res):
            if res is None:
                return False
            _, reps, (where, _), _ = res
            mu = reps[0].units[where] if where < len(reps[0].units) else None
            cu = reps[1].units[where] if where < len(reps[1].units) else None
            return (shape(mu), shape(cu)) == want

        cache = {}

        def test(items):
            key = tuple(id(c) for _, c in items)
            if key not in cache:
                if self.trials >= self.max_trials or time.time() > self.deadline:
                    return False
                cache[key] = same(self.trial(items))
            return cache[key]

        # Grow the window of earlier batches until the difference shows.
        items = None
        for back in (1, 4, 16, 64):
            cand = [(gi, c) for gi, (cmds, _) in enumerate(history[-back:]) for c in cmds]
            if test(cand):
                items = cand
                break
            if back >= len(history):
                break
        if items is None:
            return None
        items = ddmin(items, test)
        res = self.trial(items)
        if not same(res):
            return None
        sent, reps, diff, cmds = res
        return {"items": items, "sent": sent, "replies": reps, "diff": diff, "trials": self.trials}


def ddmin(items, test):
    """Zeller's ddmin: a 1-minimal subsequence for which test() holds."""
    n = 2
    while len(items) >= 2:
        size = -(-len(items) // n)
        subsets = [items[i:i + size] for i in range(0, len(items), size)]
        for s in subsets:
            if test(s):
                items, n = s, 2
                break
        else:
            for i in range(len(subsets)):
                comp = [x for j, s in enumerate(subsets) if j != i for x in s]
                if test(comp):
                    items, n = comp, max(n - 1, 2)
                    break
            else:
                if n >= len(items):
                    break
                n = min(len(items), 2 * n)
    return items


# ---------------------------------------------------------------------------
# Main loop and reporting
# ---------------------------------------------------------------------------


def run_seed(seed, args, pair, results, log):
    gen = Generator(seed, pair.book)
    minimizer = Minimizer(pair, args.minimize_budget)
    pair.reset()
    history = []  # batches since the last reset
    sent_cmds = batch_no = 0
    while sent_cmds < args.commands:
        cmds, mode = gen.batch(args.commands - sent_cmds)
        sent_cmds += len(cmds)
        batch_no += 1
        split_seed = gen.rng.random()
        history.append((cmds, mode))
        del history[:-64]
        sent, reps, diff = pair.run(cmds, mode, split_seed)
        if not diff:
            if reps[0].closed or reps[1].closed:
                # Replies queued before a close may be lost, so equal replies
                # do not prove equal state: start over.
                pair.reset()
                history = []
            continue
        where, why = diff
        mc, cc = reps
        mu = mc.units[where] if where < len(mc.units) else None
        cu = cc.units[where] if where < len(cc.units) else None
        min_info = None if args.no_minimize else minimizer.minimize(history, (shape(mu), shape(cu)))
        if min_info:
            # The difference shows at the end of the reproducer, but may be
            # caused by any of its (usually one or two) commands: name them all.
            labels = []
            for _, c in min_info["items"]:
                if c.label not in labels:
                    labels.append(c.label)
            label, culprit = "+".join(labels), min_info["sent"][0]
        else:
            label, culprit = "?", b""
        d = Diff(seed, batch_no, cmds, sent, mc, cc, where, why, label, culprit, min_info)
        for a in ALLOWLIST:
            try:
                if a.match(d):
                    d.allowed = a
                    break
            except Exception:  # a predicate that trips on odd bytes is no match
                pass
        results.append(d)
        if args.verbose:
            log(report_diff(d, len(results)))
        pair.reset()
        history = []


def report_diff(d, no):
    out = ["DIFF #%d seed=%d batch=%d label=%s%s" %
           (no, d.seed, d.batch_no, d.label, " (allowed: %s)" % d.allowed.name if d.allowed else "")]
    out.append("  signature: %s" % d.signature())
    out.append("  reason: %s (reply unit %d)" % (d.why, d.where))
    out.append("  commands: %s" % ", ".join(c.label for c in d.cmds))
    out.append("  sent to memcached: %s" % trunc(d.sent[0]))
    if d.sent[1] != d.sent[0]:
        out.append("  sent to corecache: %s" % trunc(d.sent[1]))
    out.append("  memcached replied: %s" % d.mc.describe(d.where))
    out.append("  corecache replied: %s" % d.cc.describe(d.where))
    m = d.min_info
    if m:
        out.append("  minimal reproducer (fresh state, %d command(s), %d trials):" % (len(m["items"]), m["trials"]))
        out.append("    sent to memcached: %s" % trunc(m["sent"][0]))
        if m["sent"][1] != m["sent"][0]:
            out.append("    sent to corecache: %s" % trunc(m["sent"][1]))
        where = m["diff"][0]
        out.append("    memcached replied: %s" % m["replies"][0].describe(where))
        out.append("    corecache replied: %s" % m["replies"][1].describe(where))
    else:
        out.append("  (not reproduced in isolation)")
    return "\n".join(out)


def write_json(results, path):
    """Every difference, machine-readable (bytes as latin-1 strings)."""
    import json

    def b(x):
        return x.decode("latin-1")
    out = []
    for d in results:
        m = d.min_info
        out.append({
            "seed": d.seed, "batch": d.batch_no, "signature": d.signature(), "label": d.label,
            "reason": d.why, "allowed": d.allowed.name if d.allowed else None,
            "sent": [b(d.sent[0]), b(d.sent[1])], "memcached": b(d.mc.raw), "corecache": b(d.cc.raw),
            "closed": [d.mc.closed, d.cc.closed], "timeout": [d.mc.timeout, d.cc.timeout],
            "minimal": None if not m else {
                "sent": [b(m["sent"][0]), b(m["sent"][1])],
                "memcached": b(m["replies"][0].raw), "corecache": b(m["replies"][1].raw),
                "closed": [m["replies"][0].closed, m["replies"][1].closed],
                "timeout": [m["replies"][0].timeout, m["replies"][1].timeout],
                "mc_unit": b(d.mc_unit), "cc_unit": b(d.cc_unit)}})
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


def summarize(results, max_report, log):
    groups = {}
    for d in results:
        groups.setdefault(d.signature(), []).append(d)
    unexplained = [d for d in results if not d.allowed]
    log("")
    log("== %d difference(s), %d unexplained, %d distinct signature(s)" %
        (len(results), len(unexplained), len(groups)))
    order = sorted(groups.items(), key=lambda kv: (bool(kv[1][0].allowed), -len(kv[1]), kv[0]))
    for i, (sig, ds) in enumerate(order):
        first = next((d for d in ds if d.min_info), ds[0])
        tag = "allowed: %s (%s)" % (first.allowed.name, first.allowed.reason) if first.allowed else "UNEXPLAINED"
        log("")
        log("[%d] x%d %s  %s" % (i + 1, len(ds), tag, sig))
        if i < max_report:
            log(report_diff(first, i + 1))
    return unexplained


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corecache", help="corecache binary (tested as `PATH -p PORT -l 127.0.0.1 -t N`)")
    ap.add_argument("--memcached", default=DEFAULT_MEMCACHED, help="reference memcached (default %(default)s)")
    ap.add_argument("--against-memcached", action="store_true",
                    help="self-check: a second memcached stands in for corecache (must show no difference)")
    ap.add_argument("--threads", type=int, default=1, help="worker threads of the tested server (-t)")
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default %(default)s)")
    ap.add_argument("--commands", type=int, default=100000, help="commands per seed (default %(default)s)")
    ap.add_argument("--max-report", type=int, default=50, help="signatures reported in full")
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a batch's replies")
    ap.add_argument("--minimize-budget", type=float, default=300.0, help="seconds per seed spent minimizing")
    ap.add_argument("--no-minimize", action="store_true", help="report differences without minimizing")
    ap.add_argument("--json", metavar="PATH", help="also write every difference to PATH as JSON")
    ap.add_argument("--no-probe", action="store_true",
                    help="do not read every key back (mg ... u) after each batch")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every difference as it is found")
    args = ap.parse_args()
    if not args.against_memcached and not args.corecache:
        ap.error("--corecache PATH is required (or --against-memcached)")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    def log(msg):
        print(msg, flush=True)

    logdir = tempfile.mkdtemp(prefix="mcdiff.")
    ref = Server("memcached", memcached_argv(args.memcached, 1), logdir)
    if args.against_memcached:
        cand = Server("memcached-b", memcached_argv(args.memcached, args.threads), logdir)
    else:
        cand = Server("corecache", corecache_argv(os.path.abspath(args.corecache), args.threads), logdir)

    # Servers die with us, also on SIGTERM/SIGINT.
    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    results = []
    started = time.time()
    try:
        for seed in seeds:
            t0 = time.time()
            ref.start()
            cand.start()
            pair = Pair(ref, cand, args.timeout, probe=not args.no_probe)
            n_before = len(results)
            run_seed(seed, args, pair, results, log)
            log("seed %d: %d commands, %d difference(s), %.1f s (%s -t %d)" %
                (seed, args.commands, len(results) - n_before, time.time() - t0, cand.name, args.threads))
            if pair.both_timeouts:
                log("  warning: %d batch(es) timed out on both servers, first: %s" %
                    (len(pair.both_timeouts), trunc(pair.both_timeouts[0], 300)))
            for c in pair.conns:
                if c:
                    c.close()
            ref.stop()
            cand.stop()
    except RuntimeError as e:
        log("mcdiff: %s" % e)
        return 2
    finally:
        ref.stop()
        cand.stop()
    unexplained = summarize(results, args.max_report, log)
    if args.json:
        write_json(results, args.json)
    log("")
    log("mcdiff: %s, %d seed(s) x %d commands, %.1f s; server logs in %s" %
        ("FAIL: %d unexplained difference(s)" % len(unexplained) if unexplained else "OK",
         len(seeds), args.commands, time.time() - started, logdir))
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
