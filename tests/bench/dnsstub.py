#!/usr/bin/env python3
"""A loopback DNS responder for the benchmark: every question gets NXDOMAIN.

Portcullis checks SPF, DKIM and DMARC on every message and may look up the
client's PTR; in the benchmark all those lookups go to this stub through the
config's `[dns] nameservers`, so that no packet leaves the machine and no
lookup waits for a timeout. The answer carries an SOA record in the authority
section (minimum 300 s), so a resolver may cache the negative answer, as it
would for a real sender domain that publishes nothing.

Usage: dnsstub.py PORT   (serves UDP and TCP on 127.0.0.1:PORT until killed;
it exits by itself after --max-seconds, 4 h by default)
"""

import argparse
import socket
import struct
import threading
import time

RCODE_NXDOMAIN = 3
# Root SOA: owner ".", type SOA, class IN, TTL 300, mname ".", rname ".",
# serial 1, refresh 3600, retry 600, expire 86400, minimum 300.
SOA_RR = (
    b"\x00"
    + struct.pack("!HHIH", 6, 1, 300, 2 + 20)
    + b"\x00\x00"
    + struct.pack("!IIIII", 1, 3600, 600, 86400, 300)
)


def answer(query: bytes) -> bytes | None:
    """Build the NXDOMAIN reply to one DNS query, or None if it is unusable."""
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000:  # a response, not a query
        return None
    # Copy the first question (name + type + class) verbatim.
    pos = 12
    if qdcount >= 1:
        while pos < len(query):
            length = query[pos]
            if length == 0:
                pos += 1
                break
            if length & 0xC0:  # no compression expected in a question
                return None
            pos += 1 + length
        pos += 4
        if pos > len(query):
            return None
        question = query[12:pos]
        qd = 1
    else:
        question = b""
        qd = 0
    opcode = (flags >> 11) & 0xF
    rd = flags & 0x0100
    rflags = 0x8000 | (opcode << 11) | 0x0400 | rd | 0x0080 | RCODE_NXDOMAIN
    header = struct.pack("!HHHHHH", qid, rflags, qd, 0, 1, 0)
    return header + question + SOA_RR


def serve_udp(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    while True:
        data, peer = sock.recvfrom(4096)
        reply = answer(data)
        if reply is not None:
            sock.sendto(reply, peer)


def serve_tcp_conn(conn: socket.socket) -> None:
    conn.settimeout(10)
    try:
        while True:
            head = conn.recv(2)
            if len(head) < 2:
                return
            (length,) = struct.unpack("!H", head)
            data = b""
            while len(data) < length:
                chunk = conn.recv(length - len(data))
                if not chunk:
                    return
                data += chunk
            reply = answer(data)
            if reply is None:
                return
            conn.sendall(struct.pack("!H", len(reply)) + reply)
    except OSError:
        return
    finally:
        conn.close()


def serve_tcp(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve_tcp_conn, args=(conn,), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--max-seconds", type=float, default=4 * 3600)
    args = parser.parse_args()
    threading.Thread(target=serve_udp, args=(args.port,), daemon=True).start()
    threading.Thread(target=serve_tcp, args=(args.port,), daemon=True).start()
    time.sleep(args.max_seconds)


if __name__ == "__main__":
    main()
