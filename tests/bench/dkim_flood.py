#!/usr/bin/env python3
"""DKIM flood: the CPU one crafted message costs the server, and whether
other clients are served meanwhile (issue 12, "CPU -> DKIM").

The crafted message carries one DKIM-Signature whose h= lists 100,000 field
names (--names), with the message's true body hash in bh=, a bogus b= and a
key in DNS, so a verifier that takes the signature on hashes the fields it
lists. For each binary given, the script starts `portcullis serve` on
loopback with [verify] on and a small DNS responder of its own that serves
the key (everything else is NXDOMAIN). Each of --messages rounds sends the
message from --parallel clients at once (default: one per core, so that a
server verifying on its session threads has them all busy) and prints:

  reply        the reply code(s)
  cpu_s        server CPU time (utime + stime from /proc/PID/stat) per
               message, from the end of DATA to the last reply
  reply_s      wall time from the end of DATA to the last reply
  greeting_s   wall time until one more connection, opened 0.5 s after the
               end of DATA, got its 220 greeting (then EHLO, QUIT)
  dkim         the DKIM results of a "message verified" log line

It is a benchmark, not a test: nothing fails when a figure is high.

Usage:
  cargo build --release -p portcullis
  python3 tests/bench/dkim_flood.py [--messages 3] [--names 100000] [LABEL=]BIN...
  (BIN defaults to target/release/portcullis; give an older build too for a
  before/after table, e.g. before=/tmp/portcullis-old after=target/release/portcullis)
"""

import argparse
import base64
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnsstub import answer as nxdomain  # noqa: E402

DOMAIN = "flood.bench"
KEY_NAME = f"s._domainkey.{DOMAIN}"
# The Ed25519 public key of RFC 8463 Appendix A.2: a valid key; b= is bogus
# anyway, so no private key is needed.
KEY_RECORD = b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
BODY = "Hello Bob.\r\n"
TICK = os.sysconf("SC_CLK_TCK")
GREETING_DELAY = 0.5


# ------------------------------------------------------------------- DNS --
def question(query: bytes):
    """(name, qtype, end offset) of the first question, or None."""
    pos, labels = 12, []
    while pos < len(query):
        n = query[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0:
            return None
        labels.append(query[pos + 1 : pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    if pos + 4 > len(query):
        return None
    qtype = struct.unpack("!H", query[pos : pos + 2])[0]
    return ".".join(labels).lower(), qtype, pos + 4


def respond(query: bytes):
    q = question(query) if len(query) >= 12 else None
    if q is None or q[0] != KEY_NAME or q[1] != 16:
        return nxdomain(query)
    _, _, end = q
    qid, flags = struct.unpack("!HH", query[:4])
    rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080
    header = struct.pack("!HHHHHH", qid, rflags, 1, 1, 0, 0)
    rdata = bytes([len(KEY_RECORD)]) + KEY_RECORD
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 300, len(rdata)) + rdata
    return header + query[12:end] + rr


def serve_dns(sock: socket.socket):
    while True:
        try:
            data, addr = sock.recvfrom(4096)
        except OSError:
            return
        reply = respond(data)
        if reply:
            sock.sendto(reply, addr)


# --------------------------------------------------------------- message --
def relaxed_body_hash(body: str) -> str:
    """RFC 6376 §3.4.4 relaxed body canonicalization, then SHA-256."""
    lines = body.split("\r\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [re.sub(r"[ \t]+", " ", line).rstrip(" \t") for line in lines]
    while lines and lines[-1] == "":
        lines.pop()
    canon = "".join(line + "\r\n" for line in lines)
    return base64.b64encode(hashlib.sha256(canon.encode()).digest()).decode()


def crafted_message(names: int) -> bytes:
    h = ["From"]
    for i in range(1, names):
        h.append(("\r\n\t" if i % 50 == 0 else "") + f"X-N{i}")
    signature = (
        f"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d={DOMAIN}; s=s;\r\n"
        f"\th={':'.join(h)};\r\n\tbh={relaxed_body_hash(BODY)}; b=AAAA\r\n"
    )
    headers = (
        f"From: <alice@{DOMAIN}>\r\nTo: <bench@bench.test>\r\nSubject: flood\r\n"
        "Date: Mon, 23 Nov 2026 07:00:00 +0000\r\nMessage-ID: <flood@bench>\r\n\r\n"
    )
    return (signature + headers + BODY).encode()


# ---------------------------------------------------------------- server --
def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Smtp:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.buf = b""

    def reply(self) -> str:
        lines = []
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.decode(errors="replace").rstrip("\r")
            lines.append(line)
            if len(line) < 4 or line[3] == " ":
                return "\n".join(lines)

    def cmd(self, line: str, code: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        r = self.reply()
        if not r.startswith(code):
            raise RuntimeError(f"{line} -> {r}")
        return r


def parallel_greeting(port: int, out: dict):
    # Late enough for a server verifying in its session tasks to be in the
    # hashing loop (after the key lookup), early enough to be in it still.
    time.sleep(GREETING_DELAY)
    start = time.monotonic()
    c = Smtp(port)
    c.reply()
    out["greeting_s"] = time.monotonic() - start
    c.cmd("EHLO other.bench", "250")
    c.cmd("QUIT", "221")


def run(label: str, binary: str, messages: int, names: int, parallel: int, max_header_size):
    tmp = tempfile.mkdtemp(prefix="dkim-flood-")
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 0))
    threading.Thread(target=serve_dns, args=(dns,), daemon=True).start()
    port = free_port()
    config = os.path.join(tmp, "portcullis.toml")
    with open(config, "w") as f:
        f.write(
            f'hostname = "mx.bench.test"\ndata_dir = "{tmp}/data"\n'
            f'[[listen]]\naddress = "127.0.0.1:{port}"\nrole = "smtp"\n'
            '[relay]\naccepted_domains = ["bench.test"]\n'
            '[routes]\n"bench.test" = "127.0.0.1:9"\n'
            f'[dns]\nnameservers = ["127.0.0.1:{dns.getsockname()[1]}"]\ndnssec = "off"\ntimeout = "5s"\n'
            f'[admin]\nsocket = "{tmp}/admin.sock"\n'
            "[verify]\nenabled = true\n"
            + (
                f"[limits]\nmax_header_size = {max_header_size}\n"
                if max_header_size
                else ""
            )
        )
    log_path = os.path.join(tmp, "server.log")
    log = open(log_path, "w")
    server = subprocess.Popen(
        [binary, "serve", "--config", config, "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=tmp,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        message = crafted_message(names)
        rows = []
        for i in range(messages):
            # `parallel` clients at once, so that a server verifying in its
            # session tasks has every worker thread busy.
            clients = []
            for _ in range(parallel):
                c = Smtp(port)
                c.reply()
                c.cmd("EHLO client.bench", "250")
                c.cmd(f"MAIL FROM:<alice@{DOMAIN}>", "250")
                c.cmd("RCPT TO:<bench@bench.test>", "250")
                c.cmd("DATA", "354")
                c.sock.sendall(message)
                clients.append(c)
            cpu0 = cpu_seconds(server.pid)
            start = time.monotonic()
            for c in clients:
                c.sock.sendall(b"\r\n.\r\n")
            side: dict = {}
            t = threading.Thread(target=parallel_greeting, args=(port, side))
            t.start()
            replies = [c.reply()[:3] for c in clients]
            reply_s = time.monotonic() - start
            cpu = (cpu_seconds(server.pid) - cpu0) / parallel
            t.join()
            for c in clients:
                c.cmd("QUIT", "221")
            rows.append((i + 1, ",".join(sorted(set(replies))), cpu, reply_s, side.get("greeting_s", float("nan"))))
        time.sleep(0.3)
        dkim = []
        with open(log_path) as f:
            for line in f:
                if '"message verified"' in line:
                    event = json.loads(line)
                    fields = event.get("fields", event)
                    dkim.append(fields.get("dkim", "?"))
        for row, d in zip(rows, dkim[::parallel] + ["?"] * len(rows)):
            print(
                f"{label:>10} "
                f"{row[0]:>3} {row[1]:>5} {row[2]:>8.2f} {row[3]:>8.2f} {row[4]:>10.3f}  {d}"
            )
        sys.stdout.flush()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        dns.close()
        subprocess.run(["rm", "-rf", tmp], check=False)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, "..", "..", "target", "release", "portcullis")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("binaries", nargs="*", default=[default])
    p.add_argument("--messages", type=int, default=3)
    p.add_argument("--names", type=int, default=100_000)
    # Builds since the header-section bound (256 KiB) refuse the crafted
    # message with 552 before any DKIM work; raise it to measure DKIM.
    p.add_argument("--max-header-size", type=int, default=None)
    p.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    size = len(crafted_message(a.names))
    print(
        f"# crafted message: {size} bytes, h= of {a.names} names; "
        f"{a.parallel} sent at once per round; {os.cpu_count()} cores"
    )
    print(f"{'binary':>10} {'msg':>3} {'reply':>5} {'cpu_s':>8} {'reply_s':>8} {'greeting_s':>10}  dkim")
    for b in a.binaries:
        label, _, path = b.rpartition("=")
        path = os.path.abspath(path)
        run(label or os.path.basename(path), path, a.messages, a.names, a.parallel, a.max_header_size)


if __name__ == "__main__":
    main()
