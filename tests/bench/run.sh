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
#   SERVERS="..."      any of: sink postfix portcullis (default: all three)
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

SENDER=from@client.test
RCPT=bench@bench.test
HELO=client.test

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }

# ---------------------------------------------------------------- cleanup --
PIDS=()          # every long-lived background process this script started
CHILD=""         # the short-lived child being waited for (smtp-source, cargo)
PF_CONF=""       # set while our Postfix instance may be running
RUN_DIR=""

stop_pid() {     # stop_pid PID [GRACE_SECONDS]: TERM, bounded wait, KILL
    local pid=$1 grace=${2:-10} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop in ${grace}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# wait_child PID: wait for a child started with `&` and return its status.
# Waiting with `wait` (not in the foreground) lets INT/TERM interrupt the
# script at once; cleanup then stops the child.
wait_child() {
    CHILD=$1
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ -n $PF_CONF ]]; then
        postfix_stop
    fi
    local pid
    [[ -n $CHILD ]] && stop_pid "$CHILD" 10
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid" 10
    done
    if [[ -n $RUN_DIR && -d $RUN_DIR ]]; then
        if [[ $KEEP == 1 ]]; then
            log "kept $RUN_DIR"
        else
            rm -rf "$RUN_DIR"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ tools --
SMTP_SOURCE=""
SMTP_SINK=""

find_tool() {    # find_tool NAME: print its path or nothing
    local d
    for d in /usr/sbin /usr/lib/postfix/sbin /usr/libexec/postfix /usr/local/sbin; do
        if [[ -x $d/$1 ]]; then
            echo "$d/$1"
            return 0
        fi
    done
    command -v "$1" 2>/dev/null || true
}

ensure_tools() {
    SMTP_SOURCE=$(find_tool smtp-source)
    SMTP_SINK=$(find_tool smtp-sink)
    if [[ -z $SMTP_SOURCE || -z $SMTP_SINK ]] || ! command -v postfix >/dev/null \
        || ! command -v python3 >/dev/null; then
        [[ $(id -u) == 0 ]] || die "Postfix (smtp-source, smtp-sink) and python3 are needed; run as root to install them"
        log "installing postfix and python3 (apt-get)"
        # "No configuration": the package must not set up (and start) a
        # system-wide Postfix on port 25; the benchmark brings its own config.
        if command -v debconf-set-selections >/dev/null && [[ ! -e /etc/postfix/main.cf ]]; then
            echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix python3 >/dev/null
        SMTP_SOURCE=$(find_tool smtp-source)
        SMTP_SINK=$(find_tool smtp-sink)
    fi
    [[ -n $SMTP_SOURCE && -n $SMTP_SINK ]] || die "smtp-source/smtp-sink not found after installing postfix"
    getent passwd postfix >/dev/null || die "the postfix user is missing"
    [[ $(id -u) == 0 ]] || die "run as root: Postfix's master must start as root and smtp-sink drops to the postfix user"
}

# ------------------------------------------------------------------ ports --
pick_ports() {   # prints N distinct free loopback ports (TCP and UDP free)
    python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1]); got = []
for _ in range(2000):
    if len(got) == n:
        break
    p = random.randint(20000, 32000)   # below the kernel's ephemeral range
    if p in got:
        continue
    ok = True
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            ok = False
        finally:
            s.close()
    if ok:
        got.append(p)
if len(got) != n:
    sys.exit("no free ports")
print(" ".join(map(str, got)))
PY
}

banner_ok() {    # banner_ok PORT: true if the port answers "220"
    local got
    got=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 3 <&3" 2>/dev/null) || return 1
    [[ $got == 220 ]]
}

wait_banner() {  # wait_banner PORT SECONDS [PID]: bounded wait for a banner
    local port=$1 secs=$2 pid=${3:-} i
    for ((i = 0; i < secs * 5; i++)); do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        banner_ok "$port" && return 0
        sleep 0.2
    done
    return 1
}

# ------------------------------------------------------------------- sink --
SINK_PID=""
SINK_OUT=""

sink_start() {
    SINK_OUT=$RUN_DIR/sink.out
    # -c: print counters (sess/quit/mesg) on every event; -u: drop root.
    "$SMTP_SINK" -c -u postfix -h sink.bench.test "127.0.0.1:$SINK_PORT" 1024 >"$SINK_OUT" 2>&1 &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_banner "$SINK_PORT" 10 "$SINK_PID" || die "smtp-sink did not start: $(tail -c 500 "$SINK_OUT")"
}

sink_count() {   # messages smtp-sink has received so far
    local n
    n=$(tail -c 400 "$SINK_OUT" | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9][0-9]*\).*/\1/p' | tail -n 1)
    echo "${n:-0}"
}

wait_drained() { # wait_drained TARGET SECONDS: true once the sink got TARGET
    local target=$1 secs=$2 deadline
    deadline=$(($(date +%s) + secs))
    while (($(date +%s) < deadline)); do
        (($(sink_count) >= target)) && return 0
        sleep 0.05
    done
    return 1
}

wait_quiet() {   # wait until the sink count stops moving for 2 s (bounded)
    local secs=$1 last=-1 cur stable=0 i
    for ((i = 0; i < secs * 2; i++)); do
        cur=$(sink_count)
        if [[ $cur == "$last" ]]; then
            stable=$((stable + 1))
            ((stable >= 4)) && return 0
        else
            stable=0
        fi
        last=$cur
        sleep 0.5
    done
    return 1
}

# ---------------------------------------------------------------- postfix --
PF_DIR=""

postfix_start() {
    PF_DIR=$RUN_DIR/postfix
    mkdir -p "$PF_DIR/conf" "$PF_DIR/queue" "$PF_DIR/data"
    chown postfix "$PF_DIR/data"
    sed -e "s#@QUEUE_DIR@#$PF_DIR/queue#g" \
        -e "s#@DATA_DIR@#$PF_DIR/data#g" \
        -e "s#@LOG_FILE@#$PF_DIR/postfix.log#g" \
        -e "s#@RUN_DIR@#$RUN_DIR#g" \
        -e "s#@SINK_PORT@#$SINK_PORT#g" \
        "$HERE/postfix/main.cf.in" >"$PF_DIR/conf/main.cf"
    sed -e "s#@SMTP_PORT@#$PF_PORT#g" "$HERE/postfix/master.cf.in" >"$PF_DIR/conf/master.cf"
    # `postfix check` creates the queue's subdirectories with their owners.
    if ! postfix -c "$PF_DIR/conf" check; then
        log "postfix check failed:"; tail -n 20 "$PF_DIR/postfix.log" >&2 || true
        return 1
    fi
    PF_CONF=$PF_DIR/conf
    postfix -c "$PF_CONF" start >/dev/null 2>&1 || {
        log "postfix start failed:"; tail -n 20 "$PF_DIR/postfix.log" >&2 || true
        return 1
    }
    if ! wait_banner "$PF_PORT" 30; then
        log "Postfix did not answer on $PF_PORT:"; tail -n 20 "$PF_DIR/postfix.log" >&2 || true
        return 1
    fi
}

postfix_stop() {
    [[ -n $PF_CONF ]] || return 0
    local pidfile=$PF_DIR/queue/pid/master.pid pid="" i
    [[ -r $pidfile ]] && pid=$(tr -dc 0-9 <"$pidfile")
    postfix -c "$PF_CONF" stop >/dev/null 2>&1 || true
    if [[ -n $pid ]]; then
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "Postfix master $pid still running; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    PF_CONF=""
}

postfix_version() { postconf -h mail_version 2>/dev/null || echo unknown; }

# ------------------------------------------------------------- portcullis --
PC_PID=""
PC_DIR=""
DNS_PID=""

portcullis_prepare() {  # build (unless BUILD=0) and check the binary
    if [[ $BUILD == 1 && $PORTCULLIS_BIN == "$ROOT/target/release/portcullis" ]]; then
        if command -v cargo >/dev/null; then
            log "cargo build --release -p portcullis (log: $RUN_DIR/cargo.log)"
            (cd "$ROOT" && exec cargo build --release -p portcullis) >"$RUN_DIR/cargo.log" 2>&1 &
            if ! wait_child $!; then
                log "the build failed; last lines:"; tail -n 15 "$RUN_DIR/cargo.log" >&2
                return 1
            fi
        else
            log "cargo not found; using the existing binary if any"
        fi
    fi
    if [[ ! -x $PORTCULLIS_BIN ]]; then
        log "no Portcullis binary at $PORTCULLIS_BIN"
        return 1
    fi
}

dns_start() {
    [[ -n $DNS_PID ]] && return 0
    python3 "$HERE/dnsstub.py" "$DNS_PORT" >"$RUN_DIR/dnsstub.log" 2>&1 &
    DNS_PID=$!
    PIDS+=("$DNS_PID")
    sleep 0.3
    kill -0 "$DNS_PID" 2>/dev/null || die "the DNS stub did not start: $(cat "$RUN_DIR/dnsstub.log")"
}

portcullis_start() {
    PC_DIR=$RUN_DIR/portcullis
    mkdir -p "$PC_DIR/data"
    sed -e "s#@DATA_DIR@#$PC_DIR/data#g" \
        -e "s#@SMTP_PORT@#$PC_PORT#g" \
        -e "s#@SINK_PORT@#$SINK_PORT#g" \
        -e "s#@DNS_PORT@#$DNS_PORT#g" \
        "$HERE/portcullis.toml.in" >"$PC_DIR/portcullis.toml"
    if ! "$PORTCULLIS_BIN" config check --config "$PC_DIR/portcullis.toml" >"$PC_DIR/config-check.out" 2>&1; then
        log "portcullis config check rejected the bench config:"
        tail -n 20 "$PC_DIR/config-check.out" >&2
        return 1
    fi
    "$PORTCULLIS_BIN" serve --config "$PC_DIR/portcullis.toml" >"$PC_DIR/portcullis.log" 2>&1 &
    PC_PID=$!
    PIDS+=("$PC_PID")
    if ! wait_banner "$PC_PORT" 30 "$PC_PID"; then
        log "Portcullis did not answer on $PC_PORT; last log lines:"
        tail -n 20 "$PC_DIR/portcullis.log" >&2
        return 1
    fi
}

portcullis_stop() {
    [[ -n $PC_PID ]] || return 0
    stop_pid "$PC_PID" 60
    PC_PID=""
}

proc_status() {  # proc_status PID FIELD -> value in kB (or n/a)
    awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print "n/a" }' \
        "/proc/$1/status" 2>/dev/null || echo n/a
}

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

    read -r SINK_PORT PF_PORT PC_PORT DNS_PORT <<<"$(pick_ports 4)"

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

    local server
    for server in $SERVERS; do
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
