# shellcheck shell=bash
# Shared functions of the benchmark scripts (run.sh, drain.sh). Sourced, not
# run. The sourcing script sets `set -euo pipefail`, HERE, ROOT and the knobs
# these functions read (RUN_DIR, SINK_PORT, PF_PORT, PC_PORT, DNS_PORT,
# PORTCULLIS_BIN, BUILD, ...) before calling them. Sourcing installs the
# cleanup trap: every process started through these functions is stopped on
# exit, including on Ctrl-C.
#
# Hooks for variants of the servers' configs:
#   PF_EXTRA_MAIN   lines appended to the Postfix main.cf (later settings win)
#   PC_EXTRA_TOML   lines appended to portcullis.toml; the template's last
#                   table is [admin], so leading bare keys land in [admin]
#   PC_TEMPLATE     the Portcullis config template (default portcullis.toml.in;
#                   the soak scripts bring their own, with other [limits])

# shellcheck disable=SC2034 # used by the sourcing scripts
SENDER=from@client.test
# shellcheck disable=SC2034
RCPT=bench@bench.test
# shellcheck disable=SC2034
HELO=client.test
PF_EXTRA_MAIN=${PF_EXTRA_MAIN:-}
PC_EXTRA_TOML=${PC_EXTRA_TOML:-}
PC_TEMPLATE=${PC_TEMPLATE:-}

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

ensure_python3() {  # the soak scripts need python3 only (no Postfix)
    command -v python3 >/dev/null && return 0
    [[ $(id -u) == 0 ]] || die "python3 is needed; run as root to install it"
    log "installing python3 (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
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
    [[ -n $PF_EXTRA_MAIN ]] && printf '\n# added by the script (PF_EXTRA_MAIN)\n%s\n' "$PF_EXTRA_MAIN" >>"$PF_DIR/conf/main.cf"
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
    PC_DIR=$RUN_DIR/${PC_NAME:-portcullis}   # its own data_dir per instance
    mkdir -p "$PC_DIR/data"
    sed -e "s#@DATA_DIR@#$PC_DIR/data#g" \
        -e "s#@SMTP_PORT@#$PC_PORT#g" \
        -e "s#@SINK_PORT@#$SINK_PORT#g" \
        -e "s#@DNS_PORT@#$DNS_PORT#g" \
        "${PC_TEMPLATE:-$HERE/portcullis.toml.in}" >"$PC_DIR/portcullis.toml"
    [[ -n $PC_EXTRA_TOML ]] && printf '%s\n' "$PC_EXTRA_TOML" >>"$PC_DIR/portcullis.toml"
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

# ------------------------------------------------------------- PostgreSQL --
# For SERVERS=portcullis-cluster: a PostgreSQL of the machine's newest
# version (Debian's `postgresql`, installed when missing), initdb'd into
# $RUN_DIR/pg as the `postgres` user (it refuses root), trust on loopback
# (a benchmark, not a deployment), fsync ON as in production: the cluster's
# shared writes cost what they would. Stopped on exit with the rest.
PG_PID=""

pg_start() {    # pg_start PORT
    local port=$1 bin i
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        [[ $(id -u) == 0 ]] || die "PostgreSQL is needed for portcullis-cluster; run as root to install it"
        log "installing postgresql (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    mkdir -p "$RUN_DIR/pg"
    chown postgres:postgres "$RUN_DIR/pg"
    setpriv --reuid=postgres --regid=postgres --clear-groups -- \
        "$bin/initdb" -D "$RUN_DIR/pg/data" -U portcullis -A trust -E UTF8 \
        >"$RUN_DIR/pg/initdb.log" 2>&1 || { tail -n 5 "$RUN_DIR/pg/initdb.log" >&2; return 1; }
    setpriv --reuid=postgres --regid=postgres --clear-groups -- \
        "$bin/postgres" -D "$RUN_DIR/pg/data" -p "$port" -k "$RUN_DIR/pg" \
        -c listen_addresses=127.0.0.1 >"$RUN_DIR/pg/postgres.log" 2>&1 &
    PG_PID=$!
    PIDS+=("$PG_PID")
    for ((i = 0; i < 300; i++)); do
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
        sleep 0.1
    done
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U portcullis portcullis \
        || { log "createdb failed:"; tail -n 5 "$RUN_DIR/pg/postgres.log" >&2; return 1; }
}

proc_status() {  # proc_status PID FIELD -> value in kB (or n/a)
    awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print "n/a" }' \
        "/proc/$1/status" 2>/dev/null || echo n/a
}
