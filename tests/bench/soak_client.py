#!/usr/bin/env python3
"""Load for the kill soak: SMTP sessions at full speed that survive a server
that dies and comes back.

--sessions concurrent sessions each send messages back to back (up to
--per-session on one connection, then QUIT and a new connection), every one
with a unique `X-Soak-Id:` header. The id of every message whose end of data
got a 250 is appended to --acked (flushed at once): those are the messages
the server promised to deliver. When the connection breaks (the server was
killed) the session reconnects after a short pause, forever, until SIGTERM;
then each session finishes the message in hand and the script prints

    sent N acked A refused R in_doubt D

(in_doubt: the data was sent but no reply came, because the server died
first; such a message may or may not be delivered, and either is correct).

Usage: soak_client.py --port PORT --acked FILE [--sessions 20]
"""

import argparse
import asyncio
import signal
import sys
import time

RCPT = "soak@bench.test"
SENDER = "from@client.test"


class Stats:
    sent = 0
    acked = 0
    refused = 0
    in_doubt = 0


async def reply(reader):
    """One SMTP reply (possibly multi-line): returns its code as int."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3])


async def worker(n, args, acked, stats, stop, body):
    seq = 0
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port), 5
            )
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.05)
            continue
        try:
            if await asyncio.wait_for(reply(reader), 10) != 220:
                raise ConnectionError("no greeting")
            writer.write(b"EHLO client.test\r\n")
            if await asyncio.wait_for(reply(reader), 10) != 250:
                raise ConnectionError("EHLO refused")
            for _ in range(args.per_session):
                if stop.is_set():
                    break
                seq += 1
                soak_id = f"{args.prefix}-{n}-{seq}"
                writer.write(f"MAIL FROM:<{SENDER}>\r\n".encode())
                if await asyncio.wait_for(reply(reader), 10) != 250:
                    raise ConnectionError("MAIL refused")
                writer.write(f"RCPT TO:<{RCPT}>\r\n".encode())
                if await asyncio.wait_for(reply(reader), 10) != 250:
                    raise ConnectionError("RCPT refused")
                writer.write(b"DATA\r\n")
                if await asyncio.wait_for(reply(reader), 10) != 354:
                    raise ConnectionError("DATA refused")
                msg = (
                    f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: soak {soak_id}\r\n"
                    f"X-Soak-Id: {soak_id}\r\n\r\n"
                ).encode() + body + b".\r\n"
                writer.write(msg)
                stats.sent += 1
                try:
                    code = await asyncio.wait_for(reply(reader), 30)
                except (ConnectionError, OSError, asyncio.TimeoutError):
                    stats.in_doubt += 1
                    raise
                if code == 250:
                    acked.write(soak_id + "\n")
                    acked.flush()
                    stats.acked += 1
                else:
                    stats.refused += 1
            writer.write(b"QUIT\r\n")
            await asyncio.wait_for(writer.drain(), 5)
        except (ConnectionError, OSError, asyncio.TimeoutError, ValueError):
            await asyncio.sleep(0.05)
        finally:
            writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--acked", required=True)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--per-session", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024, help="body octets")
    parser.add_argument("--prefix", default=f"s{int(time.time())}")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    line = b"x" * 76 + b"\r\n"
    body = line * max(1, args.size // len(line))
    acked = open(args.acked, "a", encoding="ascii")
    stats = Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.call_later(args.max_seconds, stop.set)
    await asyncio.gather(
        *(worker(n, args, acked, stats, stop, body) for n in range(args.sessions))
    )
    acked.close()
    print(
        f"sent {stats.sent} acked {stats.acked} refused {stats.refused} "
        f"in_doubt {stats.in_doubt}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
