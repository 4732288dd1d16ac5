#!/usr/bin/env python3
"""Open N idle SMTP connections, read each banner, then hold them.

Prints one line `ready OPENED BANNERS FAILED` to stdout once every connection
is open and has been given the chance to send its banner (or the deadline has
passed), then holds the sockets until SIGTERM arrives or --hold seconds have
passed. The caller measures the server while this holds.

Usage: idle_conns.py --port PORT [--count 1000] [--deadline 60] [--hold 300]
                     [--sources 127.0.0.2,127.0.0.3]

--sources spreads the connections over several local addresses (bound
before connecting, round robin), so that many thousands of connections do
not run out of ephemeral ports of one address pair.
"""

import argparse
import resource
import selectors
import signal
import socket
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--deadline", type=float, default=60.0,
                        help="seconds allowed to open all and read banners")
    parser.add_argument("--hold", type=float, default=300.0,
                        help="seconds to hold the connections at most")
    parser.add_argument("--sources", default="",
                        help="comma-separated local addresses to connect from")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    start = time.monotonic()
    sources = [a for a in args.sources.split(",") if a]
    socks = []
    failed = 0
    sel = selectors.DefaultSelector()
    for i in range(args.count):
        if time.monotonic() - start > args.deadline:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            if sources:
                s.bind((sources[i % len(sources)], 0))
            s.connect((args.host, args.port))
        except OSError as e:
            failed += 1
            print(f"connect failed: {e}", file=sys.stderr)
            s.close()
            continue
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, bytearray())

    # Read banners concurrently: a banner is complete at the first line whose
    # 4th byte is a space ("220 ...\r\n"; multi-line banners use "220-").
    banners = 0
    pending = len(socks)
    while pending and time.monotonic() - start < args.deadline:
        for key, _ in sel.select(timeout=0.5):
            buf = key.data
            try:
                chunk = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                failed += 1
                pending -= 1
                sel.unregister(key.fileobj)
                continue
            buf.extend(chunk)
            for line in bytes(buf).split(b"\r\n")[:-1]:
                if len(line) >= 4 and line[3:4] == b" ":
                    if line.startswith(b"220"):
                        banners += 1
                    else:
                        failed += 1
                        print(f"unexpected greeting: {line[:80]!r}",
                              file=sys.stderr)
                    pending -= 1
                    sel.unregister(key.fileobj)
                    break

    print(f"ready {len(socks)} {banners} {failed}", flush=True)

    # Hold until SIGTERM or the hold limit.
    time.sleep(args.hold)
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
