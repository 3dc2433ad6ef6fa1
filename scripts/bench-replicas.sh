#!/usr/bin/env bash
# Remediation throughput with one and with several replicas on one store.
#
#   scripts/bench-replicas.sh
#
# For each replica count, starts that many `medic serve` on a new database,
# sends BENCH_ALERTS new alerts (deliveries of 50, each delivery to every
# replica, as Alertmanager does) routed to a runbook whose one step is
# `exec("/bin/sleep", [BENCH_STEP])`, and times from the first delivery until
# every run has finished (the replicas' medic_runbook_runs_total, summed).
# Each replica runs up to BENCH_CONCURRENT runbooks at once.
#
# Environment:
#   BENCH_STORE        postgres (default) or sqlite (one replica only)
#   BENCH_POSTGRES     server (postgres://postgres@127.0.0.1:5432)
#   BENCH_REPLICAS     replica counts to measure ("1 2")
#   BENCH_ALERTS       alerts per measurement (1000)
#   BENCH_STEP         seconds the runbook's command takes (0.1)
#   BENCH_CONCURRENT   limits.max_concurrent of each replica (8)
#   MEDIC_BIN          medic binary (default: target/release/medic, built if missing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STORE=${BENCH_STORE:-postgres}
PG=${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
REPLICAS=${BENCH_REPLICAS:-1 2}
ALERTS=${BENCH_ALERTS:-1000}
STEP=${BENCH_STEP:-0.1}
CONCURRENT=${BENCH_CONCURRENT:-8}
MEDIC=${MEDIC_BIN:-target/release/medic}
TOKEN=bench-token
[ -x "$MEDIC" ] || cargo build --release --quiet

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The deliveries: ALERTS new alerts, 50 per body.
python3 - "$WORK" "$ALERTS" <<'EOF'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
for start in range(0, n, 50):
    alerts = [{"status": "firing", "labels": {"alertname": "Bench", "instance": f"h{i}"},
               "annotations": {}, "startsAt": "2026-11-23T10:00:00Z",
               "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"{i:016x}"}
              for i in range(start, min(start + 50, n))]
    body = {"version": "4", "groupKey": f"bench{start}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "medic", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am", "alerts": alerts}
    open(f"{work}/body-{start:06d}.json", "w").write(json.dumps(body))
EOF

# start_replica DIR URL: starts one replica; sets ADDR to its address.
start_replica() {
    local dir=$1 url=$2 addr=
    mkdir -p "$dir/runbooks"
    printf 'exec("/bin/sleep", ["%s"]);\n' "$STEP" >"$dir/runbooks/step.rhai"
    cat >"$dir/medic.toml" <<EOF
[server]
listen = "127.0.0.1:0"
webhook_token = "$TOKEN"
[store]
url = "$url"
[runbooks]
dir = "$dir/runbooks"
allowed_commands = ["/bin/sleep"]
[limits]
max_concurrent = $CONCURRENT
max_queued = 100000
[[routes]]
name = "bench"
matchers = ['alertname="Bench"']
runbook = "step.rhai"
verify_for = "1h"
[escalation]
notify = ["escalations"]
[[escalation.channels]]
name = "escalations"
type = "file"
path = "$dir/escalations.jsonl"
EOF
    "$MEDIC" serve --config "$dir/medic.toml" --log-format json >"$dir/medic.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 300); do
        addr=$(grep -o '"addr" *: *"[^"]*"' "$dir/medic.log" 2>/dev/null | head -1 | sed 's/.*"\([^"]*\)"$/\1/' || true)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { cat "$dir/medic.log" >&2; exit 1; }
    ADDR=$addr
}

finished_runs() {
    local total=0 n
    for a in "$@"; do
        n=$(curl -fsS "http://$a/metrics" | awk '/^medic_runbook_runs_total/ { s += $2 } END { print s + 0 }')
        total=$((total + n))
    done
    echo "$total"
}

echo "store=$STORE alerts=$ALERTS step=${STEP}s max_concurrent=$CONCURRENT per replica"
printf '%-9s %-9s %-12s %s\n' replicas seconds "runs/s" "ideal runs/s"
for n in $REPLICAS; do
    if [ "$STORE" = postgres ]; then
        db="medic_bench_replicas_${n}_$$"
        PGOPTIONS="-c client_min_messages=warning" psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
        url="$PG/$db"
    else
        url="sqlite://$WORK/r$n/medic.db"
    fi
    addrs=()
    for r in $(seq "$n"); do
        start_replica "$WORK/r$n/$r" "$url"
        addrs+=("$ADDR")
    done
    start=$(date +%s.%N)
    for body in "$WORK"/body-*.json; do
        for a in "${addrs[@]}"; do
            curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" \
                -H 'Content-Type: application/json' --data-binary "@$body" "http://$a/webhook" &
        done
    done
    wait_for=0
    while [ "$(finished_runs "${addrs[@]}")" -lt "$ALERTS" ]; do
        sleep 0.05
        wait_for=$((wait_for + 1))
        [ "$wait_for" -lt 12000 ] || { echo "runs did not finish in 10 minutes" >&2; exit 1; }
    done
    end=$(date +%s.%N)
    python3 -c "
n, alerts, step, conc = $n, $ALERTS, $STEP, $CONCURRENT
secs = $end - $start
print(f'{n:<9} {secs:<9.2f} {alerts / secs:<12.1f} {n * conc / step:.0f}')"
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
done
