#!/usr/bin/env bash
# Portcullis vs Postfix, side by side, in one run. Not a test; CI never runs it.
#
#   bash tests/bench/run.sh              # the full matrix (tens of minutes)
#   QUICK=1 bash tests/bench/run.sh      # a smoke run (a few minutes)
#   SERVERS="sink postfix" bash tests/bench/run.sh   # leave Portcullis out
#
# What it does (see tests/bench/README.md for the why):
#   1. installs Postfix (for smtp-source, smtp-sink and Postfix itself) if
#      missing, picks free loopback ports, starts smtp-sink (the next hop of
#      both servers) and, for Portcullis, a loopback DNS stub;
#   2. for each server (sink alone = the machine's ceiling, Postfix,
#      Portcullis): starts it, drives it with smtp-source over the matrix
#      sizes x sessions x patterns, REPS times each, timing every run and
#      waiting for smtp-sink to have received every message before the next;
#   3. for Portcullis, also holds IDLE_CONNS idle connections and reads the
#      process's VmRSS;
#   4. prints the table of medians and the ratio Portcullis/Postfix.
#
# Everything runs on 127.0.0.1; every process it starts is stopped on exit.
#
# Knobs (environment):
#   QUICK=1            small counts, one repetition
#   MSGS=N             messages per run (default 2000; QUICK: 100)
#   REPS=N             repetitions per point (default 3; QUICK: 1)
#   SIZES="..."        payload bytes (default "1024 10240 102400")
#   SESSIONS="..."     parallel sessions (default "1 20 50")
#   PATTERNS="..."     per-conn (one message per connection) and/or
#                      per-session (smtp-source -d: connections are reused)
#   SERVERS="..."      any of: sink postfix portcullis portcullis-screen
#                      portcullis-cluster
#                      (default: the first three; portcullis-screen is
#                      Portcullis again with the screen on: recipients
#                      verified at the route, one DNS block list, every
#                      rate counted; the table then shows on/off). With
#                      both, the two run at once and every repetition
#                      is measured on one then the other.
#                      portcullis-cluster is portcullis-screen with
#                      [cluster] on a PostgreSQL the script starts (the
#                      screen's state, rates, policy cache and report
#                      counts then go through the database); with
#                      portcullis-screen named too, those two are the pair
#                      and the table shows cluster/single.
#   IDLE_CONNS=N       idle connections held open against Portcullis (1000)
#   PORTCULLIS_BIN=F   the binary (default target/release/portcullis)
#   BUILD=0            do not run `cargo build --release -p portcullis`
#   DRAIN_TIMEOUT=S    max wait for the sink to receive a run's mail (300)
#   RUN_TIMEOUT=S      max time of one smtp-source run (900)
#   BENCH_TMPDIR=D     where the queues live (default /var/tmp; must be a real
#                      disk, not tmpfs, or fsync costs nothing)
#   KEEP=1             keep the run directory (configs, logs, raw results)
#   RAW=1              also print the raw per-run results
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    MSGS=${MSGS:-100}
    REPS=${REPS:-1}
else
    MSGS=${MSGS:-2000}
    REPS=${REPS:-3}
fi
SIZES=${SIZES:-"1024 10240 102400"}
SESSIONS=${SESSIONS:-"1 20 50"}
PATTERNS=${PATTERNS:-"per-conn per-session"}
SERVERS=${SERVERS:-"sink postfix portcullis"}
IDLE_CONNS=${IDLE_CONNS:-1000}
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
BUILD=${BUILD:-1}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
KEEP=${KEEP:-0}
RAW=${RAW:-0}

# shellcheck source=lib.sh
source "$HERE/lib.sh"

# The screen as an MX would run it (SERVERS=portcullis-screen): every
# recipient verified at the route (smtp-sink says yes; the answer is then
# cached), every client looked up in one DNS block list (the stub answers
# NXDOMAIN: not listed, cached for the SOA minimum), every rate counted but
# set high enough never to refuse the load. Greylisting stays off:
# smtp-source does not retry.
SCREEN_TOML=${SCREEN_TOML:-'[recipients]
verify = "route"
[[dnsbl]]
zone = "bl.bench.test"
[screen]
connections_per_minute = 100000000
messages_per_minute = 100000000
recipients_per_minute = 100000000'}

# [cluster] for SERVERS=portcullis-cluster (PG_PORT is filled in at start).
cluster_toml() {
    printf '%s\n[cluster]\ndatabase = "postgresql://portcullis@127.0.0.1:%s/portcullis"\nnode = "bench"\ntls = "disable"\n' \
        "$SCREEN_TOML" "$PG_PORT"
}

# ------------------------------------------------------------- idle conns --
IDLE_REPORT=""

portcullis_idle() {  # hold IDLE_CONNS idle connections, read VmRSS
    local before after hwm threads line i idle_pid established
    before=$(proc_status "$PC_PID" VmRSS)
    python3 "$HERE/idle_conns.py" --port "$PC_PORT" --count "$IDLE_CONNS" \
        --deadline 60 --hold 300 >"$RUN_DIR/idle.out" 2>"$RUN_DIR/idle.err" &
    idle_pid=$!
    PIDS+=("$idle_pid")
    line=""
    for ((i = 0; i < 900; i++)); do   # 90 s at most
        line=$(grep -m1 '^ready ' "$RUN_DIR/idle.out" 2>/dev/null || true)
        [[ -n $line ]] && break
        kill -0 "$idle_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $line ]]; then
        log "the idle-connection client did not get ready:"; tail -n 5 "$RUN_DIR/idle.err" >&2
        stop_pid "$idle_pid" 5
        IDLE_REPORT="idle connections: client failed (see log above)"
        return 0
    fi
    sleep 2   # let the server settle
    after=$(proc_status "$PC_PID" VmRSS)
    hwm=$(proc_status "$PC_PID" VmHWM)
    threads=$(proc_status "$PC_PID" Threads)
    established=$(ss -Htn state established "( sport = :$PC_PORT )" 2>/dev/null | wc -l || echo n/a)
    read -r _ opened banners failed <<<"$line"
    stop_pid "$idle_pid" 5
    IDLE_REPORT=$(
        printf 'Idle connections against Portcullis (%s requested)\n' "$IDLE_CONNS"
        printf '  opened %s, banners read %s, failed %s, server-side established %s\n' \
            "$opened" "$banners" "$failed" "$established"
        printf '  VmRSS before: %s kB; with the connections held: %s kB' "$before" "$after"
        if [[ $before =~ ^[0-9]+$ && $after =~ ^[0-9]+$ && $opened -gt 0 ]]; then
            awk -v b="$before" -v a="$after" -v n="$opened" \
                'BEGIN { printf " (+%.1f MiB, %.1f KiB per connection)", (a - b) / 1024, (a - b) / n }'
        fi
        printf '\n  VmHWM %s kB, threads %s\n' "$hwm" "$threads"
    )
}

# --------------------------------------------------------------- the load --
RESULTS=""

run_point() {    # run_point SERVER PORT SIZE SESSIONS PATTERN REP
    local server=$1 port=$2 size=$3 sessions=$4 pattern=$5 rep=$6
    local args=(-m "$MSGS" -s "$sessions" -l "$size" -M "$HELO" -f "$SENDER" -t "$RCPT")
    [[ $pattern == per-session ]] && args+=(-d)
    local before t0 t1 t2 rc=0 acc e2e="-"
    before=$(sink_count)
    t0=$(now)
    timeout "$RUN_TIMEOUT" "$SMTP_SOURCE" "${args[@]}" "127.0.0.1:$port" \
        >"$RUN_DIR/source.out" 2>&1 &
    wait_child $! || rc=$?
    t1=$(now)
    acc=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
    if [[ $rc != 0 ]]; then
        log "$server size=$size s=$sessions $pattern rep=$rep: smtp-source exited $rc:"
        tail -n 3 "$RUN_DIR/source.out" >&2
        wait_quiet "$DRAIN_TIMEOUT" || true
    elif [[ $server == sink ]]; then
        e2e=$acc
    elif [[ ${DRAIN_BROKEN[$server]:-0} == 0 ]]; then
        if wait_drained $((before + MSGS)) "$DRAIN_TIMEOUT"; then
            t2=$(now)
            e2e=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.6f", b - a }')
        else
            log "$server: smtp-sink got $(($(sink_count) - before)) of $MSGS messages within ${DRAIN_TIMEOUT}s;" \
                "not waiting for delivery any more for $server (end-to-end figures: n/a)"
            DRAIN_BROKEN[$server]=1
        fi
    fi
    echo "$server $size $sessions $pattern $rep $MSGS $acc $e2e $rc" >>"$RESULTS"
    if [[ $rc == 0 ]]; then
        log "$(awk -v s="$server" -v z="$size" -v c="$sessions" -v p="$pattern" -v r="$rep" \
            -v n="$MSGS" -v a="$acc" -v e="$e2e" 'BEGIN {
                printf "%-10s %6d B s=%-2d %-11s rep %d: %8.1f msg/s accepted", s, z, c, p, r, n / a
                if (e != "-") printf ", %8.1f msg/s end-to-end", n / e
            }')"
    fi
}

run_matrix() {   # run_matrix SERVER PORT
    local server=$1 port=$2 pattern size sessions rep
    for pattern in $PATTERNS; do
        for size in $SIZES; do
            for sessions in $SESSIONS; do
                for ((rep = 1; rep <= REPS; rep++)); do
                    run_point "$server" "$port" "$size" "$sessions" "$pattern" "$rep"
                done
            done
        done
    done
}

# run_matrix_pair A PORT_A B PORT_B: the matrix with A and B running at
# once and every repetition of every point measured on A then on B, so
# that a slow minute of the machine (the host's other tenants, frequency
# changes) falls on both alike instead of on whichever ran then.
run_matrix_pair() {
    local a=$1 port_a=$2 b=$3 port_b=$4 pattern size sessions rep
    for pattern in $PATTERNS; do
        for size in $SIZES; do
            for sessions in $SESSIONS; do
                for ((rep = 1; rep <= REPS; rep++)); do
                    run_point "$a" "$port_a" "$size" "$sessions" "$pattern" "$rep"
                    run_point "$b" "$port_b" "$size" "$sessions" "$pattern" "$rep"
                done
            done
        done
    done
}

# portcullis_pair A TOML_A B TOML_B: Portcullis as A (PC_PORT, with TOML_A
# appended) and as B (PC2_PORT, its own data_dir, TOML_B) started side by
# side, measured in turns. The idle-connection figures are A's.
portcullis_pair() {
    local a=$1 toml_a=$2 b=$3 toml_b=$4 a_pid b_pid
    portcullis_prepare || { log "skipping Portcullis"; return 0; }
    dns_start
    log "Portcullis as $a on 127.0.0.1:$PC_PORT and as $b on 127.0.0.1:$PC2_PORT"
    if ! PC_NAME=$a PC_EXTRA_TOML="$PC_EXTRA_TOML
$toml_a" portcullis_start; then
        log "skipping Portcullis"
        portcullis_stop
        return 0
    fi
    a_pid=$PC_PID
    if ! PC_NAME=$b PC_PORT=$PC2_PORT PC_EXTRA_TOML="$PC_EXTRA_TOML
$toml_b" portcullis_start; then
        log "Portcullis as $b did not start"
        portcullis_stop
        PC_PID=$a_pid
        portcullis_stop
        return 0
    fi
    b_pid=$PC_PID
    PC_PID=$a_pid
    portcullis_idle
    run_matrix_pair "$a" "$PC_PORT" "$b" "$PC2_PORT"
    log "VmRSS after the load: $a $(proc_status "$a_pid" VmRSS) kB (VmHWM $(proc_status "$a_pid" VmHWM) kB); $b $(proc_status "$b_pid" VmRSS) kB (VmHWM $(proc_status "$b_pid" VmHWM) kB)"
    portcullis_stop
    PC_PID=$b_pid
    portcullis_stop
}

declare -A DRAIN_BROKEN=()

# ------------------------------------------------------------------- main --
main() {
    ensure_tools
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    if (($(ulimit -n) < IDLE_CONNS + 200)); then
        log "warning: open-file limit $(ulimit -n) is low for $IDLE_CONNS idle connections"
    fi

    mkdir -p "$BENCH_TMPDIR"
    RUN_DIR=$(mktemp -d "$BENCH_TMPDIR/portcullis-bench.XXXXXX")
    chmod 755 "$RUN_DIR"   # Postfix's unprivileged daemons must reach their files
    RESULTS=$RUN_DIR/results.tsv
    echo "# server size sessions pattern rep msgs accept_s e2e_s rc" >"$RESULTS"

    read -r SINK_PORT PF_PORT PC_PORT DNS_PORT PC2_PORT PG_PORT <<<"$(pick_ports 6)"

    local fstype
    fstype=$(df -T "$RUN_DIR" | awk 'NR == 2 { print $2 }')
    [[ $fstype == tmpfs ]] && log "warning: $RUN_DIR is on tmpfs; fsync is free there (set BENCH_TMPDIR)"

    sink_start

    echo "Portcullis vs Postfix benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "  machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "  queues on: $RUN_DIR ($fstype)"
    echo "  Postfix $(postfix_version); smtp-source $SMTP_SOURCE"
    echo "  Portcullis: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
    echo "  per run: $MSGS messages; $REPS repetitions; sizes: $SIZES; sessions: $SESSIONS; patterns: $PATTERNS"
    echo

    local server pair_a="" pair_b=""
    if [[ " $SERVERS " == *" portcullis-cluster "* ]]; then
        pg_start "$PG_PORT" || die "PostgreSQL did not start for portcullis-cluster"
        log "PostgreSQL on 127.0.0.1:$PG_PORT for portcullis-cluster"
    fi
    if [[ " $SERVERS " == *" portcullis-screen "* && " $SERVERS " == *" portcullis-cluster "* ]]; then
        pair_a=portcullis-screen pair_b=portcullis-cluster
    elif [[ " $SERVERS " == *" portcullis "* && " $SERVERS " == *" portcullis-screen "* ]]; then
        pair_a=portcullis pair_b=portcullis-screen
    fi
    for server in $SERVERS; do
        if [[ $server == "$pair_a" ]]; then
            if [[ $pair_a == portcullis ]]; then
                portcullis_pair portcullis "" portcullis-screen "$SCREEN_TOML"
            else
                portcullis_pair portcullis-screen "$SCREEN_TOML" portcullis-cluster "$(cluster_toml)"
            fi
            continue
        fi
        [[ $server == "$pair_b" ]] && continue
        case $server in
        sink)
            log "baseline: smtp-source -> smtp-sink on $SINK_PORT"
            run_matrix sink "$SINK_PORT"
            ;;
        postfix)
            log "Postfix on 127.0.0.1:$PF_PORT (relaying to smtp-sink on $SINK_PORT)"
            if postfix_start; then
                run_matrix postfix "$PF_PORT"
                postfix_stop
            else
                log "skipping Postfix"
                postfix_stop
            fi
            ;;
        portcullis)
            if portcullis_prepare; then
                dns_start
                log "Portcullis on 127.0.0.1:$PC_PORT (relaying to smtp-sink on $SINK_PORT, DNS stub on $DNS_PORT)"
                if portcullis_start; then
                    portcullis_idle
                    run_matrix portcullis "$PC_PORT"
                    log "Portcullis VmRSS after the load: $(proc_status "$PC_PID" VmRSS) kB (VmHWM $(proc_status "$PC_PID" VmHWM) kB)"
                    portcullis_stop
                else
                    log "skipping Portcullis"
                    portcullis_stop
                    IDLE_REPORT="Idle connections: not measured (Portcullis did not start)"
                fi
            else
                log "skipping Portcullis"
                IDLE_REPORT="Idle connections: not measured (no Portcullis binary)"
            fi
            ;;
        portcullis-screen)
            if portcullis_prepare; then
                dns_start
                log "Portcullis with the screen on, on 127.0.0.1:$PC_PORT"
                # Its own data_dir: not the queue the first instance left.
                if PC_NAME=portcullis-screen PC_EXTRA_TOML="$PC_EXTRA_TOML
$SCREEN_TOML" portcullis_start; then
                    run_matrix portcullis-screen "$PC_PORT"
                    portcullis_stop
                else
                    log "skipping Portcullis with the screen"
                    portcullis_stop
                fi
            fi
            ;;
        portcullis-cluster)
            if portcullis_prepare; then
                dns_start
                log "Portcullis in cluster mode (screen on), on 127.0.0.1:$PC_PORT"
                if PC_NAME=portcullis-cluster PC_EXTRA_TOML="$PC_EXTRA_TOML
$(cluster_toml)" portcullis_start; then
                    run_matrix portcullis-cluster "$PC_PORT"
                    portcullis_stop
                else
                    log "skipping Portcullis in cluster mode"
                    portcullis_stop
                fi
            fi
            ;;
        *) die "unknown server '$server' in SERVERS" ;;
        esac
    done

    python3 "$HERE/stats.py" "$RESULTS"
    [[ -n $IDLE_REPORT ]] && echo "$IDLE_REPORT"
    if [[ $RAW == 1 ]]; then
        echo
        echo "Raw results:"
        cat "$RESULTS"
    fi
}

main "$@"
