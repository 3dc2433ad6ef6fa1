#!/usr/bin/env bash
# Webhook intake benchmark: how many Alertmanager deliveries medic takes in on
# POST /webhook, driven by wrk from a separate process over loopback.
#
#   scripts/bench.sh
#
# Builds the release binary, then for each scenario starts medic on a fresh
# SQLite database in a temporary directory, runs wrk against it, records the
# peak memory of the medic process (VmHWM) and stops it again:
#
#   single   max throughput, 1 new alert per delivery
#   batch50  max throughput, 50 new alerts per delivery
#   resend   max throughput, 1 alert per delivery out of a fixed set of 100
#            alerts (Alertmanager resending what medic already knows)
#   rate     a steady ~1,000 deliveries/s of 1 new alert each, for latency
#
# Environment:
#   BENCH_DURATION          seconds per max-throughput scenario (15)
#   BENCH_CONNECTIONS       wrk connections for those scenarios (64)
#   BENCH_THREADS           wrk threads (2)
#   BENCH_RATE              target deliveries/s of the rate scenario (1000)
#   BENCH_RATE_DURATION     seconds of the rate scenario (20)
#   BENCH_RATE_CONNECTIONS  wrk connections of the rate scenario (10)
#   BENCH_SCENARIOS         which scenarios to run ("single batch50 resend rate")
#   BENCH_TMPDIR            where the temporary directory (and so the
#                           database) goes (default $TMPDIR or /tmp)
#   BENCH_STORE             sqlite (default) or postgres: each scenario then gets
#                           a new database on BENCH_POSTGRES
#   BENCH_POSTGRES          PostgreSQL server (postgres://postgres@127.0.0.1:5432)
#   MEDIC_BIN               medic binary to run instead of building
#                           target/release/medic (for perf, build one with
#                           line tables: cargo build --profile profiling,
#                           MEDIC_BIN=target/profiling/medic; as fast)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

BENCH_DURATION=${BENCH_DURATION:-15}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_RATE=${BENCH_RATE:-1000}
BENCH_RATE_DURATION=${BENCH_RATE_DURATION:-20}
BENCH_RATE_CONNECTIONS=${BENCH_RATE_CONNECTIONS:-10}
BENCH_SCENARIOS=${BENCH_SCENARIOS:-single batch50 resend rate}
BENCH_STORE=${BENCH_STORE:-sqlite}
BENCH_POSTGRES=${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}

COMMAND="BENCH_DURATION=$BENCH_DURATION BENCH_CONNECTIONS=$BENCH_CONNECTIONS"
COMMAND+=" BENCH_THREADS=$BENCH_THREADS BENCH_RATE=$BENCH_RATE"
COMMAND+=" BENCH_RATE_DURATION=$BENCH_RATE_DURATION"
COMMAND+=" BENCH_RATE_CONNECTIONS=$BENCH_RATE_CONNECTIONS BENCH_STORE=$BENCH_STORE"
COMMAND+=" BENCH_SCENARIOS='$BENCH_SCENARIOS'"
[ -n "${MEDIC_BIN:-}" ] && COMMAND+=" MEDIC_BIN=$MEDIC_BIN"
COMMAND+=" scripts/bench.sh"

banner() {
    printf '\n== %s\n' "$*"
}

die() {
    echo "bench: $*" >&2
    exit 1
}

# --- tools --------------------------------------------------------------------

if ! command -v wrk >/dev/null; then
    banner "install wrk"
    if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq >/dev/null
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
command -v curl >/dev/null || die "curl is needed to wait for /healthz"

if [ -n "${MEDIC_BIN:-}" ]; then
    MEDIC=$MEDIC_BIN
else
    banner "cargo build --release"
    cargo build --release
    MEDIC=$ROOT/target/release/medic
fi
[ -x "$MEDIC" ] || die "no executable medic at $MEDIC"

# --- medic lifecycle ----------------------------------------------------------

TOKEN="bench-$RANDOM$RANDOM$RANDOM"
WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/medic-bench.XXXXXX")
MEDIC_PID=
WRK_PID=

stop_medic() {
    [ -n "$MEDIC_PID" ] || return 0
    if kill -0 "$MEDIC_PID" 2>/dev/null; then
        kill -TERM "$MEDIC_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$MEDIC_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$MEDIC_PID" 2>/dev/null || true
    fi
    wait "$MEDIC_PID" 2>/dev/null || true
    MEDIC_PID=
}

cleanup() {
    if [ -n "$WRK_PID" ]; then
        kill -TERM "$WRK_PID" 2>/dev/null || true
        wait "$WRK_PID" 2>/dev/null || true
    fi
    stop_medic
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Fail with the end of medic's log.
medic_failed() {
    echo "bench: $1; end of medic's log:" >&2
    tail -n 30 "$2" >&2 || true
    exit 1
}

# start_medic NAME: start medic on a fresh database in $WORK/NAME; sets
# MEDIC_PID and ADDR.
start_medic() {
    local dir=$WORK/$1 url
    mkdir -p "$dir/runbooks"
    url="sqlite://$dir/medic.db"
    if [ "$BENCH_STORE" = postgres ]; then
        local db="medic_bench_${1}_$$"
        PGOPTIONS="-c client_min_messages=warning" psql "$BENCH_POSTGRES/postgres" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
        url="$BENCH_POSTGRES/$db"
    fi
    cat >"$dir/medic.toml" <<EOF
[server]
listen = "127.0.0.1:0"
webhook_token = "$TOKEN"

[store]
url = "$url"

[runbooks]
dir = "$dir/runbooks"

[escalation]
notify = ["escalations"]

[[escalation.channels]]
name = "escalations"
type = "file"
path = "$dir/escalations.jsonl"
EOF
    "$MEDIC" serve --config "$dir/medic.toml" --log-format json \
        >"$dir/medic.log" 2>&1 &
    MEDIC_PID=$!

    # With port 0 medic logs the bound address: {"message":"listening",
    # "addr":"127.0.0.1:PORT", ...} (possibly nested in "fields").
    ADDR=
    for _ in $(seq 300); do
        kill -0 "$MEDIC_PID" 2>/dev/null ||
            medic_failed "medic exited during startup" "$dir/medic.log"
        ADDR=$(grep '"listening"' "$dir/medic.log" 2>/dev/null |
            grep -o '"addr" *: *"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/' || true)
        [ -n "$ADDR" ] && break
        sleep 0.1
    done
    [ -n "$ADDR" ] || medic_failed "medic logged no listening address in 30s" "$dir/medic.log"

    for _ in $(seq 300); do
        if curl -fsS -o /dev/null --max-time 1 "http://$ADDR/healthz" 2>/dev/null; then
            return 0
        fi
        kill -0 "$MEDIC_PID" 2>/dev/null ||
            medic_failed "medic exited during startup" "$dir/medic.log"
        sleep 0.1
    done
    medic_failed "GET /healthz did not answer 2xx in 30s" "$dir/medic.log"
}

# --- scenarios ----------------------------------------------------------------

export LUA_PATH="$ROOT/scripts/bench/?.lua;;"
export MEDIC_BENCH_TOKEN=$TOKEN
export MEDIC_BENCH_PATH=/webhook

ROWS=()
COMMANDS=()

# run_scenario NAME ALERTS_PER_DELIVERY DURATION CONNECTIONS SCRIPT [ARGS...]
run_scenario() {
    local name=$1 per=$2 duration=$3 connections=$4 script=$5
    shift 5
    banner "$name"
    start_medic "$name"

    local cmd=(wrk "-t$BENCH_THREADS" "-c$connections" "-d${duration}s" --latency
        -s "scripts/bench/$script" "http://$ADDR/webhook")
    [ "$#" -gt 0 ] && cmd+=(-- "$@")
    echo "\$ ${cmd[*]}"
    COMMANDS+=("$(printf '%-8s %s' "$name" "${cmd[*]}")")

    # wrk runs in the background so that an interrupt is handled at once.
    local out=$WORK/$name/wrk.out
    "${cmd[@]}" >"$out" 2>&1 &
    WRK_PID=$!
    local status=0
    wait "$WRK_PID" || status=$?
    WRK_PID=
    cat "$out"
    [ "$status" -eq 0 ] || die "wrk failed (exit $status)"

    local hwm_kb
    hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$MEDIC_PID/status" 2>/dev/null || true)
    kill -0 "$MEDIC_PID" 2>/dev/null ||
        medic_failed "medic exited during the run" "$WORK/$name/medic.log"
    stop_medic

    local result
    result=$(grep '^BENCH_RESULT ' "$out" | tail -n 1) ||
        die "wrk printed no BENCH_RESULT line for $name"
    ROWS+=("$(awk -v name="$name" -v per="$per" -v hwm="${hwm_kb:-0}" -v r="$result" '
        BEGIN {
            n = split(r, kv, " ")
            for (i = 2; i <= n; i++) { split(kv[i], p, "="); v[p[1]] = p[2] }
            secs = v["duration_us"] / 1e6
            rate = secs > 0 ? v["requests"] / secs : 0
            errors = v["connect_errors"] + v["read_errors"] + v["write_errors"] + v["timeouts"]
            printf "%-8s %6d %12.0f %12.0f %9.2f %9.2f %9d %9d %9.1f\n",
                name, per, rate, rate * per, v["p50_us"] / 1000, v["p99_us"] / 1000,
                v["non2xx"], errors, hwm / 1024
        }')")
}

for scenario in $BENCH_SCENARIOS; do
    case $scenario in
    single)
        run_scenario single 1 "$BENCH_DURATION" "$BENCH_CONNECTIONS" distinct.lua 1 ;;
    batch50)
        run_scenario batch50 50 "$BENCH_DURATION" "$BENCH_CONNECTIONS" distinct.lua 50 ;;
    resend)
        run_scenario resend 1 "$BENCH_DURATION" "$BENCH_CONNECTIONS" resend.lua 100 ;;
    rate)
        run_scenario rate 1 "$BENCH_RATE_DURATION" "$BENCH_RATE_CONNECTIONS" rate.lua \
            "$BENCH_RATE" "$BENCH_THREADS" "$BENCH_RATE_CONNECTIONS" ;;
    *)
        die "unknown scenario '$scenario' (known: single batch50 resend rate)" ;;
    esac
done

# --- summary ------------------------------------------------------------------

banner "summary"
echo "command: $COMMAND"
echo "medic:   $MEDIC ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no commit'))"
echo "wrk:     $(wrk -v 2>&1 | head -n 1)"
echo "cpus:    $(nproc) x $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "memory:  $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "kernel:  $(uname -sr)"
echo "disk (database directory):"
df -hT "$WORK" | sed 's/^/  /'
echo
echo "wrk commands:"
printf '  %s\n' "${COMMANDS[@]}"
echo
printf "%-8s %6s %12s %12s %9s %9s %9s %9s %9s\n" \
    scenario alerts deliveries/s alerts/s "p50 ms" "p99 ms" non-2xx "sock err" "RSS MiB"
printf '%s\n' "${ROWS[@]}"
echo
echo "alerts = alerts per delivery; RSS MiB = peak resident memory of medic (VmHWM)."
echo "rate targets $BENCH_RATE deliveries/s: compare its deliveries/s with that."
