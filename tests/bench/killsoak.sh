#!/usr/bin/env bash
# Kill -9 soak: "a message acknowledged with 250 is never lost" (DESIGN.md),
# tested by killing the server at random moments under full load.
#
#   bash tests/bench/killsoak.sh              # 100 kills
#   KILLS=10 bash tests/bench/killsoak.sh     # a smoke run
#
# What it does:
#   1. builds a release binary (BUILD=0 to skip), starts the loopback DNS
#      stub and soak_sink.py (the next hop; it records the X-Soak-Id of every
#      message it answers 250 to, so duplicates are counted);
#   2. starts Portcullis (soak.toml.in: route bench.test to the sink, retry
#      after 2 s) and soak_client.py: SESSIONS sessions sending at full
#      speed, recording every id that got a 250 at the end of data;
#   3. KILLS times: waits a random 0.2 to MAX_GAP seconds, kill -9, restarts
#      the server on the same data directory (the client reconnects by
#      itself);
#   4. stops the load, lets the queue drain (bounded by DRAIN_TIMEOUT) and
#      compares: lost = acknowledged ids the sink never got (must be 0),
#      duplicates = ids the sink got more than once (at-least-once delivery:
#      a kill between the sink's 250 and the queue's record of it gives one).
#
# Exit status: 0 when nothing was lost, 1 otherwise. Everything runs on
# 127.0.0.1 and stops by itself; every process it starts is stopped on exit.
#
# Knobs (environment):
#   KILLS=N            kills (default 100)
#   MAX_GAP=S          longest wait between kills in seconds (default 2.0)
#   SESSIONS=N         concurrent client sessions (default 20)
#   SIZE=N             body octets (default 1024)
#   DRAIN_TIMEOUT=S    max wait for the queue to drain at the end (default 300)
#   SEED=N             random seed for the kill moments (default: the time)
#   PORTCULLIS_BIN=F   the binary (default target/release/portcullis)
#   BUILD=0            do not run `cargo build --release -p portcullis`
#   BENCH_TMPDIR=D     where the queue lives (default /var/tmp; a real disk)
#   KEEP=1             keep the run directory (logs, id lists)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

KILLS=${KILLS:-100}
MAX_GAP=${MAX_GAP:-2.0}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-1024}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
SEED=${SEED:-$(date +%s)}
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
BUILD=${BUILD:-1}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
KEEP=${KEEP:-0}
PC_TEMPLATE=$HERE/soak.toml.in

# shellcheck source=lib.sh
source "$HERE/lib.sh"

ensure_python3

RUN_DIR=$(mktemp -d "$BENCH_TMPDIR/portcullis-killsoak.XXXXXX")
read -r SINK_PORT PC_PORT DNS_PORT <<<"$(pick_ports 3)"
portcullis_prepare || die "no Portcullis binary"
RANDOM=$SEED

python3 "$HERE/soak_sink.py" --port "$SINK_PORT" --out "$RUN_DIR/received" \
    --max-seconds 7200 >"$RUN_DIR/sink.log" 2>&1 &
SINK_PID=$!
PIDS+=("$SINK_PID")
wait_banner "$SINK_PORT" 10 "$SINK_PID" || die "the sink did not start: $(cat "$RUN_DIR/sink.log")"
dns_start
portcullis_start || die "Portcullis did not start"

python3 "$HERE/soak_client.py" --port "$PC_PORT" --acked "$RUN_DIR/acked" \
    --sessions "$SESSIONS" --size "$SIZE" --max-seconds 7200 \
    >"$RUN_DIR/client.out" 2>"$RUN_DIR/client.err" &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")

count() { [[ -f $1 ]] && wc -l <"$1" || echo 0; }

log "soak: $KILLS kills, up to ${MAX_GAP}s apart, seed $SEED, $SESSIONS sessions, queue in $RUN_DIR"
start=$(date +%s)
slowest_restart=0
for ((k = 1; k <= KILLS; k++)); do
    # A random moment: 0.2 s to MAX_GAP s of load.
    gap=$(awk -v r="$RANDOM" -v max="$MAX_GAP" 'BEGIN { printf "%.2f", 0.2 + (max - 0.2) * r / 32767 }')
    sleep "$gap"
    kill -0 "$CLIENT_PID" 2>/dev/null || die "the load client died: $(tail -n 5 "$RUN_DIR/client.err")"
    kill -KILL "$PC_PID" 2>/dev/null || die "Portcullis had already exited before kill $k: $(tail -n 5 "$PC_DIR/portcullis.log")"
    wait "$PC_PID" 2>/dev/null || true
    mv "$PC_DIR/portcullis.log" "$PC_DIR/portcullis.$k.log"
    t0=$(now)
    portcullis_start || die "Portcullis did not restart after kill $k (see $PC_DIR)"
    t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
    slowest_restart=$(awk -v a="$slowest_restart" -v b="$t" 'BEGIN { print (b > a) ? b : a }')
    if ((k % 10 == 0)); then
        log "kill $k/$KILLS: acked $(count "$RUN_DIR/acked"), received $(count "$RUN_DIR/received")"
    fi
done
load_secs=$(($(date +%s) - start))

log "stopping the load"
kill -TERM "$CLIENT_PID" 2>/dev/null || true
wait "$CLIENT_PID" 2>/dev/null || true
read -r _ sent _ acked _ refused _ in_doubt <"$RUN_DIR/client.out" || die "no client summary: $(tail -n 5 "$RUN_DIR/client.err")"

# lost: acknowledged but not (yet) at the sink.
missing() {
    python3 - "$RUN_DIR/acked" "$RUN_DIR/received" <<'PY'
import sys
acked = set(open(sys.argv[1]).read().split())
received = set(open(sys.argv[2]).read().split())
print(len(acked - received))
PY
}

log "letting the queue drain (at most ${DRAIN_TIMEOUT}s)"
deadline=$(($(date +%s) + DRAIN_TIMEOUT))
while (($(date +%s) < deadline)); do
    (($(missing) == 0)) && break
    sleep 1
done
# Whatever was still being retried (unacknowledged, in doubt) settles too.
wait_quiet_file() {
    local last=-1 cur stable=0 i
    for ((i = 0; i < 120; i++)); do
        cur=$(count "$RUN_DIR/received")
        if [[ $cur == "$last" ]]; then
            stable=$((stable + 1))
            ((stable >= 6)) && return 0
        else
            stable=0
        fi
        last=$cur
        sleep 0.5
    done
}
wait_quiet_file
drain_secs=$(($(date +%s) - start - load_secs))

read -r lost duplicates extra received_total received_unique < <(python3 - "$RUN_DIR/acked" "$RUN_DIR/received" <<'PY'
import collections, sys
acked = set(open(sys.argv[1]).read().split())
lines = open(sys.argv[2]).read().split()
seen = collections.Counter(lines)
lost = len(acked - set(seen))
dups = sum(n - 1 for n in seen.values() if n > 1)
extra = len(set(seen) - acked)
print(lost, dups, extra, len(lines), len(seen))
PY
)
pc_rss=$(proc_status "$PC_PID" VmRSS)

cat <<EOF

Kill -9 soak: $KILLS kills at random moments (0.2-${MAX_GAP}s apart, seed $SEED), $SESSIONS sessions, ${SIZE}-octet bodies
  load time              ${load_secs} s (slowest restart to banner: ${slowest_restart} s)
  messages sent          $sent
  acknowledged (250)     $acked
  refused (4xx/5xx)      $refused
  in doubt (no reply)    $in_doubt
  received by the sink   $received_total ($received_unique distinct)
  drain after the load   ${drain_secs} s
  lost                   $lost
  duplicates             $duplicates
  delivered, not acked   $extra   (in doubt at a kill: delivered, which is allowed)
  server RSS at the end  ${pc_rss} kB
EOF
if ((lost > 0)); then
    log "LOST $lost acknowledged message(s); ids in $RUN_DIR (kept)"
    KEEP=1
    exit 1
fi
