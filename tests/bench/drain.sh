#!/usr/bin/env bash
# Backlog drain: Portcullis vs Postfix. Not a test; CI never runs it.
#
#   bash tests/bench/drain.sh                  # 50,000 queued messages each
#   BACKLOG=2000 bash tests/bench/drain.sh     # a smoke run
#
# For each server: its next hop (smtp-sink) is NOT listening while BACKLOG
# messages are injected, so every message is deferred and stays queued; the
# script checks that the queue holds them all, starts smtp-sink, triggers
# delivery of the whole queue at once (Postfix: `postqueue -f`; Portcullis:
# `portcullis queue retry --all`) and measures the seconds until smtp-sink
# has received every message. See tests/bench/README.md ("Backlog drain").
#
# Knobs (environment):
#   BACKLOG=N          messages queued before the drain (default 50000)
#   SIZE=B             payload bytes per message (default 1024)
#   INJECT_SESSIONS=N  smtp-source sessions for the injection (default 20;
#                      sessions are reused: smtp-source -d)
#   SERVERS="..."      postfix and/or portcullis (default both)
#   PF_HOLD=defer      how Postfix keeps the backlog: `defer` (default):
#                      `defer_transports = relay` during the injection, then
#                      cleared with postconf + reload before the flush;
#                      `refused`: like Portcullis, each message is tried
#                      once against the closed port and deferred
#   PC_DRAIN_TOML=T    extra TOML tables for Portcullis's drain config, e.g.
#                      $'[delivery]\nper_domain = 20' (default: none)
#   PORTCULLIS_BIN=F   the binary (default target/release/portcullis)
#   BUILD=0            do not run `cargo build --release -p portcullis`
#   INJECT_TIMEOUT=S   max time of the injection (default 3600)
#   QUEUE_TIMEOUT=S    max wait for the queue to hold the whole backlog (600)
#   DRAIN_TIMEOUT=S    max wait for smtp-sink to receive the backlog (1800)
#   BENCH_TMPDIR=D     where the queues live (default /var/tmp; a real disk)
#   KEEP=1             keep the run directory (configs, logs, raw results)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

BACKLOG=${BACKLOG:-50000}
SIZE=${SIZE:-1024}
INJECT_SESSIONS=${INJECT_SESSIONS:-20}
SERVERS=${SERVERS:-"postfix portcullis"}
PF_HOLD=${PF_HOLD:-defer}
PC_DRAIN_TOML=${PC_DRAIN_TOML:-}
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
BUILD=${BUILD:-1}
INJECT_TIMEOUT=${INJECT_TIMEOUT:-3600}
QUEUE_TIMEOUT=${QUEUE_TIMEOUT:-600}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-1800}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
KEEP=${KEEP:-0}

# shellcheck source=lib.sh
source "$HERE/lib.sh"

case $PF_HOLD in defer | refused) ;; *) die "PF_HOLD must be defer or refused" ;; esac

RESULTS=""

sink_stop() {
    [[ -n $SINK_PID ]] || return 0
    stop_pid "$SINK_PID" 10
    SINK_PID=""
}

# Not run in $(...): the processes they start must be known to cleanup, so
# they hand their figures back in INJECT_S and DRAIN_S.
INJECT_S=""
DRAIN_S=""

inject() {       # inject SERVER PORT: smtp-source BACKLOG messages -> INJECT_S
    local t0 t1 rc=0
    t0=$(now)
    timeout "$INJECT_TIMEOUT" "$SMTP_SOURCE" -d -s "$INJECT_SESSIONS" -m "$BACKLOG" -l "$SIZE" \
        -M "$HELO" -f "$SENDER" -t "$RCPT" "127.0.0.1:$2" >"$RUN_DIR/source-$1.out" 2>&1 &
    wait_child $! || rc=$?
    t1=$(now)
    if [[ $rc != 0 ]]; then
        log "$1: smtp-source exited $rc:"; tail -n 3 "$RUN_DIR/source-$1.out" >&2
        return 1
    fi
    INJECT_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

wait_for() {     # wait_for SECONDS WHAT CMD...: until CMD prints >= BACKLOG
    local secs=$1 what=$2 deadline n=0
    shift 2
    deadline=$(($(date +%s) + secs))
    while (($(date +%s) < deadline)); do
        n=$("$@")
        ((n >= BACKLOG)) && return 0
        sleep 0.5
    done
    log "$what: $n of $BACKLOG after ${secs}s"
    return 1
}

time_drain() {   # time_drain SERVER CMD...: start the sink, run CMD -> DRAIN_S
    local server=$1 t0 t1
    shift
    banner_ok "$SINK_PORT" && die "something answers on the sink port $SINK_PORT already"
    sink_start
    t0=$(now)
    "$@" >"$RUN_DIR/trigger-$server.out" 2>&1 || {
        log "$server: the trigger ($*) failed:"; tail -n 5 "$RUN_DIR/trigger-$server.out" >&2
        return 1
    }
    log "$server: the trigger ($*) returned after $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')s, smtp-sink has $(sink_count)"
    if wait_drained "$BACKLOG" "$DRAIN_TIMEOUT"; then
        t1=$(now)
        DRAIN_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    else
        log "$server: smtp-sink got $(sink_count) of $BACKLOG within ${DRAIN_TIMEOUT}s"
        DRAIN_S="-"
    fi
}

sink_sessions() { # SMTP sessions smtp-sink saw end, less the banner probe
    # (smtp-sink -c prints its counters as sessions end, so this is read
    # after the server has stopped and closed any cached connection)
    local n
    n=$(tail -c 400 "$SINK_OUT" | tr '\r' '\n' | sed -n 's/.*sess=\([0-9][0-9]*\).*/\1/p' | tail -n 1)
    echo $((${n:-1} - 1))
}

record() {       # record SERVER INJECT_S DRAIN_S
    local sess
    sess=$(sink_sessions)
    echo "$1 $BACKLOG $SIZE $2 $3 $sess" >>"$RESULTS"
    log "$1: injected $BACKLOG in ${2}s; drained in ${3}s over $sess SMTP sessions to the sink"
}

# ---------------------------------------------------------------- postfix --
pf_queued() {    # files in the queue's message directories
    { find "$PF_DIR/queue/incoming" "$PF_DIR/queue/active" "$PF_DIR/queue/deferred" \
        "$PF_DIR/queue/maildrop" -type f 2>/dev/null || true; } | wc -l
}

pf_deferred() {
    { find "$PF_DIR/queue/deferred" -type f 2>/dev/null || true; } | wc -l
}

pf_flush() {     # the trigger: clear defer_transports (if set), flush
    postqueue -c "$PF_CONF" -f
}

drain_postfix() {
    PF_EXTRA_MAIN=""
    if [[ $PF_HOLD == defer ]]; then
        PF_EXTRA_MAIN="defer_transports = relay"
    fi
    log "Postfix on 127.0.0.1:$PF_PORT, next hop 127.0.0.1:$SINK_PORT closed (PF_HOLD=$PF_HOLD)"
    postfix_start || { postfix_stop; return 1; }
    inject postfix "$PF_PORT" || { postfix_stop; return 1; }
    # Every message must have left incoming/active for deferred: queued and
    # waiting, not in a delivery attempt.
    wait_for "$QUEUE_TIMEOUT" "Postfix deferred queue" pf_deferred || { postfix_stop; return 1; }
    log "Postfix: $(pf_queued) messages queued ($(pf_deferred) deferred)"
    if [[ $PF_HOLD == defer ]]; then
        # Un-defer the transport before the clock starts; nothing is due
        # before the flush (the deferred files carry their retry time).
        postconf -c "$PF_CONF" -e "defer_transports ="
        postfix -c "$PF_CONF" reload >/dev/null 2>&1
        sleep 2
    fi
    time_drain postfix pf_flush || { sink_stop; postfix_stop; return 1; }
    log "Postfix: $(pf_queued) messages left in the queue"
    postfix_stop   # closes cached connections: the sink counts them now
    sleep 1
    record postfix "$INJECT_S" "$DRAIN_S"
    sink_stop
}

# ------------------------------------------------------------- portcullis --
pc_metric() {    # pc_metric NAME [LABELS]: the value, 0 if absent
    local v
    v=$(curl -fsS --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null \
        | awk -v m="$1${2:-}" '$1 == m { print $2; exit }') || true
    printf '%.0f\n' "${v:-0}"
}

pc_queued() { pc_metric portcullis_queue_messages; }
pc_deferred() { pc_metric portcullis_deliveries_total '{outcome="deferred"}'; }

pc_retry() {
    "$PORTCULLIS_BIN" queue retry --all --config "$PC_DIR/portcullis.toml"
}

drain_portcullis() {
    portcullis_prepare || return 1
    dns_start
    # metrics lands in the template's [admin]; retry = 1h: after its first
    # (refused) attempt nothing retries by itself during the injection.
    PC_EXTRA_TOML=$(printf 'metrics = "127.0.0.1:%s"\n\n[queue]\nretry = ["1h"]\n\n%s\n' \
        "$METRICS_PORT" "$PC_DRAIN_TOML")
    log "Portcullis on 127.0.0.1:$PC_PORT, next hop 127.0.0.1:$SINK_PORT closed, metrics on $METRICS_PORT"
    portcullis_start || { portcullis_stop; return 1; }
    inject portcullis "$PC_PORT" || { portcullis_stop; return 1; }
    wait_for "$QUEUE_TIMEOUT" "Portcullis queue" pc_queued || { portcullis_stop; return 1; }
    # Every message has had its first attempt (refused, deferred for 1h).
    wait_for "$QUEUE_TIMEOUT" "Portcullis first attempts" pc_deferred || { portcullis_stop; return 1; }
    log "Portcullis: $(pc_queued) messages queued ($(pc_deferred) deferrals)"
    time_drain portcullis pc_retry || { sink_stop; portcullis_stop; return 1; }
    log "Portcullis: $(pc_queued) messages left in the queue; VmHWM $(proc_status "$PC_PID" VmHWM) kB"
    portcullis_stop
    sleep 1
    record portcullis "$INJECT_S" "$DRAIN_S"
    sink_stop
}

report() {
    python3 - "$RESULTS" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    server, n, size, inj, drain, sess = line.split()
    rows[server] = (int(n), int(size), inj, drain, sess)
def rate(n, s):
    return n / float(s) if s not in ("-", "") and float(s) > 0 else None
print(f"{'server':<11} {'backlog':>8} {'size':>7} {'inject s':>9} {'accept/s':>9} {'drain s':>9} {'drain msg/s':>12} {'sessions':>9}")
for server, (n, size, inj, drain, sess) in rows.items():
    a, d = rate(n, inj), rate(n, drain)
    print(f"{server:<11} {n:>8} {size:>7} {float(inj):>9.1f} {a:>9.1f} "
          f"{drain if drain == '-' else format(float(drain), '.1f'):>9} "
          f"{'n/a' if d is None else format(d, '.1f'):>12} {sess:>9}")
pf, pc = rows.get("postfix"), rows.get("portcullis")
if pf and pc:
    a, b = rate(pf[0], pf[3]), rate(pc[0], pc[3])
    if a and b:
        print(f"drain ratio Portcullis/Postfix: {b / a:.2f} (above 1: Portcullis drains faster)")
    else:
        print("drain ratio: n/a")
PY
}

main() {
    ensure_tools
    mkdir -p "$BENCH_TMPDIR"
    RUN_DIR=$(mktemp -d "$BENCH_TMPDIR/portcullis-drain.XXXXXX")
    chmod 755 "$RUN_DIR"
    RESULTS=$RUN_DIR/drain.tsv
    echo "# server backlog size inject_s drain_s sink_sessions" >"$RESULTS"
    read -r SINK_PORT PF_PORT PC_PORT DNS_PORT METRICS_PORT <<<"$(pick_ports 5)"
    local fstype
    fstype=$(df -T "$RUN_DIR" | awk 'NR == 2 { print $2 }')
    [[ $fstype == tmpfs ]] && log "warning: $RUN_DIR is on tmpfs; fsync is free there (set BENCH_TMPDIR)"

    echo "Backlog drain, Portcullis vs Postfix — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "  machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "  queues on: $RUN_DIR ($fstype)"
    echo "  Postfix $(postfix_version) (PF_HOLD=$PF_HOLD); Portcullis: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
    echo "  backlog: $BACKLOG messages of $SIZE bytes, injected over $INJECT_SESSIONS reused sessions"
    echo

    local server
    for server in $SERVERS; do
        case $server in
        postfix) drain_postfix || log "Postfix: no figure" ;;
        portcullis) drain_portcullis || log "Portcullis: no figure" ;;
        *) die "unknown server '$server' in SERVERS" ;;
        esac
    done
    report
}

main "$@"
