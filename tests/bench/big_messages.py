#!/usr/bin/env python3
"""Memory under large messages: SESSIONS concurrent sessions each send one
message of SIZE octets to a release build of Portcullis, which verifies them
(SPF, DKIM, DMARC against the loopback DNS stub), queues them durably and
relays them to a discarding sink on loopback. The script samples the
server's VmRSS from /proc/PID/status every 50 ms and prints its peak
(VmHWM), so that a change of how bodies are held can be measured before and
after. It is a benchmark, not a test: CI never runs it.

    python3 tests/bench/big_messages.py --bin target/release/portcullis
    python3 tests/bench/big_messages.py --bin /tmp/portcullis-old --label before
    SESSIONS=20 SIZE=1048576 python3 tests/bench/big_messages.py --bin ...

Knobs (flags or environment): --sessions/SESSIONS (200), --size/SIZE
(26214400 minus 4 KiB, so that the message with our headers fits the default
[limits] max_message_size), --tmpdir/BENCH_TMPDIR (/var/tmp: a real disk;
the queue needs about SESSIONS x SIZE x 2 free while it runs and is removed
afterwards), --extra-toml (lines appended to the config, e.g.
'[delivery]\\nmax_concurrent = 1' to see delivery's share), --keep (keep
the run directory and the server log).

Everything listens on 127.0.0.1 on free ports; the server, the DNS stub and
the sink are stopped on exit.
"""

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid, key):
    """A field of /proc/PID/status in kB (None once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """Samples VmRSS every 50 ms; remembers the peak and when it happened."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.peak_at = 0.0
        self.start_time = time.monotonic()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            rss = proc_status(self.pid, "VmRSS")
            if rss is None:
                return
            if rss > self.peak:
                self.peak = rss
                self.peak_at = time.monotonic() - self.start_time
            time.sleep(0.05)


# ------------------------------------------------------------------ sink --
class Sink:
    """A discarding SMTP server: counts messages, keeps nothing."""

    def __init__(self):
        self.received = 0
        self.octets = 0

    async def handle(self, reader, writer):
        try:
            writer.write(b"220 sink.bench.test ESMTP\r\n")
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    return
                cmd = line[:4].upper()
                if cmd in (b"EHLO", b"HELO"):
                    writer.write(b"250-sink.bench.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif cmd == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    tail = b""
                    while True:
                        chunk = await reader.read(1 << 20)
                        if not chunk:
                            return
                        self.octets += len(chunk)
                        # The end marker may straddle two reads.
                        if b"\r\n.\r\n" in tail + chunk[:8] or b"\r\n.\r\n" in chunk:
                            break
                        tail = (tail + chunk)[-5:]
                    self.received += 1
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif cmd == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


# ---------------------------------------------------------------- client --
def make_message(size):
    """A message of `size` octets; no line starts with a dot."""
    head = (
        b"From: <sender@client.test>\r\nTo: <bench@bench.test>\r\n"
        b"Subject: big message\r\nMessage-ID: <big@client.test>\r\n\r\n"
    )
    line = b"x" * 76 + b"\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[: size - 2] + b"\r\n"


async def expect(reader, code):
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            if not line.startswith(code):
                raise RuntimeError(f"expected {code!r}, got {line!r}")
            return line


async def send_one(port, message, results):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await expect(reader, b"220")
        for cmd, code in (
            (b"EHLO client.test", b"250"),
            (b"MAIL FROM:<sender@client.test>", b"250"),
            (b"RCPT TO:<bench@bench.test>", b"250"),
            (b"DATA", b"354"),
        ):
            writer.write(cmd + b"\r\n")
            await expect(reader, code)
        view = memoryview(message)
        for i in range(0, len(view), 1 << 20):
            writer.write(view[i : i + (1 << 20)])
            await writer.drain()
        writer.write(b".\r\n")
        reply = await reader.readline()
        results.append(reply[:3].decode(errors="replace"))
        writer.write(b"QUIT\r\n")
        await writer.drain()
        writer.close()
    except Exception as e:  # noqa: BLE001 - every failure is reported
        results.append(f"error: {e}")


async def main_async(args, port, sink, sink_port):
    server = await asyncio.start_server(sink.handle, "127.0.0.1", sink_port)
    message = make_message(args.size)
    results = []
    t0 = time.monotonic()
    await asyncio.gather(*(send_one(port, message, results) for _ in range(args.sessions)))
    accepted_s = time.monotonic() - t0
    ok = sum(1 for r in results if r == "250")
    deadline = time.monotonic() + args.drain_timeout
    while sink.received < ok and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    delivered_s = time.monotonic() - t0
    server.close()
    return results, ok, accepted_s, delivered_s


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(HERE, "../../target/release/portcullis"))
    p.add_argument("--label", default="")
    p.add_argument("--sessions", type=int, default=int(os.environ.get("SESSIONS", 200)))
    p.add_argument("--size", type=int, default=int(os.environ.get("SIZE", 26214400 - 4096)))
    p.add_argument("--tmpdir", default=os.environ.get("BENCH_TMPDIR", "/var/tmp"))
    p.add_argument("--extra-toml", default=os.environ.get("PC_EXTRA_TOML", ""))
    p.add_argument("--drain-timeout", type=float, default=900)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()

    run_dir = tempfile.mkdtemp(prefix="portcullis-big.", dir=args.tmpdir)
    port, sink_port, dns_port = free_port(), free_port(), free_port()
    config = os.path.join(run_dir, "portcullis.toml")
    with open(config, "w") as f:
        f.write(
            f"""hostname = "mx.bench.test"
data_dir = "{run_dir}/data"
[[listen]]
address = "127.0.0.1:{port}"
role = "smtp"
[relay]
accepted_domains = ["bench.test"]
[routes]
"bench.test" = "127.0.0.1:{sink_port}"
[dns]
nameservers = ["127.0.0.1:{dns_port}"]
dnssec = "off"
[limits]
max_connections = 2000
max_connections_per_ip = 2000
[admin]
socket = "{run_dir}/admin.sock"
{args.extra_toml}
"""
        )
    procs = []
    log = open(os.path.join(run_dir, "server.log"), "w")
    try:
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "dnsstub.py"), str(dns_port)]))
        server = subprocess.Popen([args.bin, "serve", "--config", config], stderr=log, stdout=log)
        procs.append(server)
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(3) == b"220":
                        break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("the server did not answer; see " + log.name)
        rss_idle = proc_status(server.pid, "VmRSS")
        sampler = Sampler(server.pid)
        sampler.start()
        sink = Sink()
        results, ok, accepted_s, delivered_s = asyncio.run(main_async(args, port, sink, sink_port))
        time.sleep(1)
        sampler.stop.set()
        sampler.join()
        hwm = proc_status(server.pid, "VmHWM")
        rss_after = proc_status(server.pid, "VmRSS")
        errors = [r for r in results if r != "250"]
        label = f" [{args.label}]" if args.label else ""
        print(f"Large messages{label}: {args.sessions} concurrent sessions x {args.size} octets")
        print(f"  binary: {args.bin}")
        print(f"  accepted (250): {ok} in {accepted_s:.1f} s; other replies: {len(errors)} {sorted(set(errors))[:3]}")
        print(f"  delivered to the sink: {sink.received} ({sink.octets / 2**20:.0f} MiB) after {delivered_s:.1f} s")
        print(f"  VmRSS idle {rss_idle / 1024:.1f} MiB; peak (VmHWM) {hwm / 1024:.1f} MiB, "
              f"sampled peak {sampler.peak / 1024:.1f} MiB at {sampler.peak_at:.1f} s; after {rss_after / 1024:.1f} MiB")
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        if args.keep:
            print(f"  kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
