#!/usr/bin/env bash
# Connection hold: 10,000 idle connections must not stop the server from
# serving anyone else ("the server keeps serving others while it is
# attacked", DESIGN.md), and what they cost in memory is measured.
#
#   bash tests/bench/idle10k.sh                 # 10,000 connections
#   IDLE_CONNS=2000 bash tests/bench/idle10k.sh # a smoke run
#
# What it does:
#   1. builds a release binary (BUILD=0 to skip), raises the open-file limit
#      (ulimit -n) to the hard limit, starts the loopback DNS stub, the sink
#      (soak_sink.py) and Portcullis (soak.toml.in: [limits] max_connections
#      and max_connections_per_ip 12,000);
#   2. idle_conns.py opens IDLE_CONNS connections from SOURCES (several
#      127.0.0.x addresses, so that one address pair does not run out of
#      ephemeral ports), reads every banner and holds them all;
#   3. while they are held, PROBES times a second client does a whole
#      transaction (connect, greeting, EHLO, MAIL, RCPT, DATA, 250, QUIT),
#      timing the greeting and the whole;
#   4. prints the server's VmRSS/VmHWM/threads before and while held, and
#      the probes' times. Exit status 0 when every connection got its banner
#      and every probe finished within LIMIT seconds (default 1).
#
# Everything runs on 127.0.0.1-127.0.0.x and stops by itself; every process
# it starts is stopped on exit.
#
# Knobs (environment):
#   IDLE_CONNS=N       idle connections (default 10000)
#   SOURCES="a,b"      local addresses to connect from
#                      (default 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5)
#   PROBES=N           transactions of the second client (default 5)
#   LIMIT=S            the most a probe may take (default 1.0)
#   PORTCULLIS_BIN=F   the binary (default target/release/portcullis)
#   BUILD=0            do not run `cargo build --release -p portcullis`
#   BENCH_TMPDIR=D     where the queue lives (default /var/tmp)
#   KEEP=1             keep the run directory
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

IDLE_CONNS=${IDLE_CONNS:-10000}
SOURCES=${SOURCES:-127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5}
PROBES=${PROBES:-5}
LIMIT=${LIMIT:-1.0}
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
BUILD=${BUILD:-1}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
KEEP=${KEEP:-0}
PC_TEMPLATE=$HERE/soak.toml.in

# shellcheck source=lib.sh
source "$HERE/lib.sh"

ensure_python3

# The server and the idle client each need a descriptor per connection;
# both inherit this limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= IDLE_CONNS + 200)) \
    || die "open-file limit $(ulimit -n) (hard $(ulimit -Hn)) is below $IDLE_CONNS + 200"

RUN_DIR=$(mktemp -d "$BENCH_TMPDIR/portcullis-idle10k.XXXXXX")
read -r SINK_PORT PC_PORT DNS_PORT <<<"$(pick_ports 3)"
portcullis_prepare || die "no Portcullis binary"

python3 "$HERE/soak_sink.py" --port "$SINK_PORT" --out "$RUN_DIR/received" \
    --max-seconds 1800 >"$RUN_DIR/sink.log" 2>&1 &
PIDS+=("$!")
wait_banner "$SINK_PORT" 10 || die "the sink did not start: $(cat "$RUN_DIR/sink.log")"
dns_start
portcullis_start || die "Portcullis did not start"
sleep 1
rss0=$(proc_status "$PC_PID" VmRSS)
thr0=$(proc_status "$PC_PID" Threads)

log "opening $IDLE_CONNS idle connections from $SOURCES"
t0=$(now)
python3 "$HERE/idle_conns.py" --port "$PC_PORT" --count "$IDLE_CONNS" --sources "$SOURCES" \
    --deadline 180 --hold 600 >"$RUN_DIR/idle.out" 2>"$RUN_DIR/idle.err" &
IDLE_PID=$!
PIDS+=("$IDLE_PID")
line=""
for ((i = 0; i < 2000; i++)); do   # 200 s at most
    line=$(grep -m1 '^ready ' "$RUN_DIR/idle.out" 2>/dev/null || true)
    [[ -n $line ]] && break
    kill -0 "$IDLE_PID" 2>/dev/null || break
    sleep 0.1
done
[[ -n $line ]] || die "the idle client did not get ready: $(tail -n 5 "$RUN_DIR/idle.err")"
read -r _ opened banners failed <<<"$line"
open_secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
kill -0 "$PC_PID" 2>/dev/null || die "Portcullis died under the idle connections: $(tail -n 5 "$PC_DIR/portcullis.log")"
rss1=$(proc_status "$PC_PID" VmRSS)
thr1=$(proc_status "$PC_PID" Threads)
fds1=$(find "/proc/$PC_PID/fd" -maxdepth 1 | wc -l)

log "holding $opened connections ($banners banners); probing with a second client"
probe_out=$(python3 - "$PC_PORT" "$PROBES" <<'PY'
import socket, sys, time

port, probes = int(sys.argv[1]), int(sys.argv[2])

def reply(f):
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3])

for n in range(probes):
    t0 = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        f = s.makefile("rb")
        def cmd(line, want):
            s.sendall(line)
            code = reply(f)
            if code != want:
                raise RuntimeError(f"{line!r}: {code}")
        if reply(f) != 220:
            raise RuntimeError("no 220 greeting")
        greet = time.monotonic() - t0
        cmd(b"EHLO probe.test\r\n", 250)
        cmd(b"MAIL FROM:<probe@client.test>\r\n", 250)
        cmd(b"RCPT TO:<probe@bench.test>\r\n", 250)
        cmd(b"DATA\r\n", 354)
        cmd(b"Subject: probe\r\nX-Soak-Id: probe-%d\r\n\r\nhello\r\n.\r\n" % n, 250)
        cmd(b"QUIT\r\n", 221)
        s.close()
        print(f"{greet:.3f} {time.monotonic() - t0:.3f}")
    except Exception as e:  # a failed probe is a result, not a crash
        print(f"fail {time.monotonic() - t0:.3f} {e}")
PY
)
rss2=$(proc_status "$PC_PID" VmRSS)
hwm2=$(proc_status "$PC_PID" VmHWM)

kill -TERM "$IDLE_PID" 2>/dev/null || true
wait "$IDLE_PID" 2>/dev/null || true

worst_greet=$(awk '$1 != "fail" { if ($1 > m) m = $1 } END { printf "%.3f", m }' <<<"$probe_out")
worst_total=$(awk '$1 != "fail" { if ($2 > m) m = $2 } END { printf "%.3f", m }' <<<"$probe_out")
fails=$(grep -c '^fail' <<<"$probe_out" || true)
per_conn=$(awk -v a="$rss0" -v b="$rss1" -v n="$opened" 'BEGIN { if (n > 0) printf "%.1f", (b - a) / n; else print "n/a" }')

cat <<EOF

Connection hold: $opened idle connections (from $SOURCES), opened with banners in ${open_secs} s
  banners received         $banners (failed $failed)
  server RSS before        $rss0 kB ($thr0 threads)
  server RSS while held    $rss1 kB ($thr1 threads, $fds1 descriptors): $per_conn kB per connection
  server RSS after probes  $rss2 kB (peak VmHWM $hwm2 kB)
  second client, $PROBES transactions while held (greeting, whole transaction in s):
$(sed 's/^/    /' <<<"$probe_out")
  slowest greeting         $worst_greet s
  slowest transaction      $worst_total s (limit $LIMIT s)
EOF

ok=1
((banners == IDLE_CONNS)) || { log "only $banners of $IDLE_CONNS connections got a banner"; ok=0; }
((fails == 0)) || { log "$fails probe(s) failed"; ok=0; }
awk -v w="$worst_total" -v l="$LIMIT" 'BEGIN { exit !(w <= l) }' || { log "a probe took ${worst_total}s (limit ${LIMIT}s)"; ok=0; }
((ok == 1))
