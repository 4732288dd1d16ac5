#!/usr/bin/env python3
"""A minimal SMTP sink that records the soak id of every message it accepts.

Accepts everything (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), and for
each message it answers 250 to, appends the value of its `X-Soak-Id:` header
(or `-` when it has none) as one line to --out, flushed before the 250 goes
out: a line in the file means the sink took responsibility for the message.
The same id twice means the message was delivered twice (at-least-once
delivery after a kill mid-delivery). Single-threaded asyncio; runs until
SIGTERM or --max-seconds.

Usage: soak_sink.py --port PORT --out FILE [--host 127.0.0.1]
"""

import argparse
import asyncio
import signal
import sys


async def session(reader, writer, out):
    def send(line):
        writer.write(line.encode() + b"\r\n")

    send("220 sink.soak.test ESMTP")
    try:
        while True:
            await writer.drain()
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                send("250-sink.soak.test")
                send("250-8BITMIME")
                send("250 SMTPUTF8")
            elif verb == b"HELO":
                send("250 sink.soak.test")
            elif verb == b"DATA":
                send("354 go ahead")
                await writer.drain()
                soak_id = "-"
                in_header = True
                while True:
                    data = await reader.readline()
                    if not data:
                        return  # cut off mid-message: nothing accepted
                    if data in (b".\r\n", b".\n"):
                        break
                    if in_header:
                        if data in (b"\r\n", b"\n"):
                            in_header = False
                        elif data[:10].lower() == b"x-soak-id:":
                            soak_id = data[10:].strip().decode("ascii", "replace")
                out.write(soak_id + "\n")
                out.flush()
                send("250 2.0.0 ok")
            elif verb == b"QUIT":
                send("221 bye")
                await writer.drain()
                return
            else:  # MAIL, RCPT, RSET, NOOP and anything else
                send("250 ok")
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    out = open(args.out, "a", encoding="ascii")
    server = await asyncio.start_server(
        lambda r, w: session(r, w, out), args.host, args.port, limit=1 << 20
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        try:
            await asyncio.wait_for(stop.wait(), args.max_seconds)
        except asyncio.TimeoutError:
            pass
    out.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
