#!/usr/bin/env bash
# Retention soak: pushes SOAK_ALERTS alerts through `medic serve` with a short
# store.retention and records the database's size over time, to show it levelling off
# once history is pruned as fast as it is written. Not run by scripts/test.sh.
#
#   scripts/soak-retention.sh                       # SQLite, one million alerts
#   SOAK_STORE=postgres scripts/soak-retention.sh   # PostgreSQL
#
# Each alert fires and then resolves (one delivery of SOAK_BATCH firing alerts, then one
# of the same alerts resolved); 9 in 10 go to an `ignore = true` route, 1 in 10 to a
# route whose runbook logs one line, so runs, steps and verifications are in the history
# too. Every SOAK_SAMPLE seconds it prints one line: elapsed seconds, alerts sent, the
# database's size (SQLite: the file, and its WAL apart; PostgreSQL: pg_database_size), the
# incidents and audit entries stored, and the deliveries' latency over the interval
# (p50, p99, max, as the load generator saw it). At the end: what medic logged about
# pruning (batches, the longest one), how long its batches held the writer (a histogram)
# and `medic audit verify`.
#
# Environment:
#   SOAK_ALERTS      alerts to push (1000000)
#   SOAK_BATCH       alerts per delivery (100)
#   SOAK_SENDERS     concurrent senders (4)
#   SOAK_RATE        alerts per second to aim at (2000; 0: as fast as medic takes them)
#   SOAK_RETENTION   store.retention (60s)
#   SOAK_SAMPLE      seconds between size samples (10)
#   SOAK_TAIL        seconds to keep sampling after the last alert (120)
#   SOAK_STORE       sqlite (default) or postgres (a new database on SOAK_POSTGRES)
#   SOAK_POSTGRES    PostgreSQL server (postgres://postgres@127.0.0.1:5432)
#   SOAK_TMPDIR      where the work directory goes (default $TMPDIR or /tmp)
#   MEDIC_BIN        medic binary to run instead of building target/release/medic
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

SOAK_ALERTS=${SOAK_ALERTS:-1000000}
SOAK_BATCH=${SOAK_BATCH:-100}
SOAK_SENDERS=${SOAK_SENDERS:-4}
SOAK_RATE=${SOAK_RATE:-2000}
SOAK_RETENTION=${SOAK_RETENTION:-60s}
SOAK_SAMPLE=${SOAK_SAMPLE:-10}
SOAK_TAIL=${SOAK_TAIL:-120}
SOAK_STORE=${SOAK_STORE:-sqlite}
SOAK_POSTGRES=${SOAK_POSTGRES:-postgres://postgres@127.0.0.1:5432}

die() {
    echo "soak: $*" >&2
    exit 1
}

command -v python3 >/dev/null || die "python3 is needed (the load generator)"
command -v curl >/dev/null || die "curl is needed to wait for /healthz"
[ "$SOAK_STORE" = sqlite ] || [ "$SOAK_STORE" = postgres ] || die "SOAK_STORE is sqlite or postgres"
[ "$SOAK_STORE" = sqlite ] || command -v psql >/dev/null || die "psql is needed for SOAK_STORE=postgres"

if [ -n "${MEDIC_BIN:-}" ]; then
    MEDIC=$MEDIC_BIN
else
    echo "== cargo build --release"
    cargo build --release
    MEDIC=$ROOT/target/release/medic
fi
[ -x "$MEDIC" ] || die "no executable medic at $MEDIC"

WORK=$(mktemp -d "${SOAK_TMPDIR:-${TMPDIR:-/tmp}}/medic-soak.XXXXXX")
TOKEN="soak-$RANDOM$RANDOM$RANDOM"
MEDIC_PID=
LOAD_PID=
DB=

cleanup() {
    [ -n "$LOAD_PID" ] && kill -TERM "$LOAD_PID" 2>/dev/null || true
    if [ -n "$MEDIC_PID" ] && kill -0 "$MEDIC_PID" 2>/dev/null; then
        kill -TERM "$MEDIC_PID" 2>/dev/null || true
        wait "$MEDIC_PID" 2>/dev/null || true
    fi
    if [ -n "$DB" ]; then
        psql "$SOAK_POSTGRES/postgres" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$WORK/runbooks"
echo 'log("fixed");' >"$WORK/runbooks/fix.rhai"
URL="sqlite://$WORK/medic.db"
if [ "$SOAK_STORE" = postgres ]; then
    DB="medic_soak_$$"
    PGOPTIONS="-c client_min_messages=warning" psql "$SOAK_POSTGRES/postgres" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
    URL="$SOAK_POSTGRES/$DB"
fi
cat >"$WORK/medic.toml" <<EOF
[server]
listen = "127.0.0.1:0"
webhook_token = "$TOKEN"

[store]
url = "$URL"
retention = "$SOAK_RETENTION"

[runbooks]
dir = "$WORK/runbooks"

[[routes]]
name = "fixed"
matchers = ['alertname="SoakFixed"']
runbook = "fix.rhai"

[[routes]]
name = "ignored"
matchers = ['alertname="SoakIgnored"']
ignore = true

[escalation]
notify = ["escalations"]

[[escalation.channels]]
name = "escalations"
type = "file"
path = "$WORK/escalations.jsonl"
EOF

"$MEDIC" serve --config "$WORK/medic.toml" --log-format json >"$WORK/medic.log" 2>&1 &
MEDIC_PID=$!
ADDR=
for _ in $(seq 300); do
    kill -0 "$MEDIC_PID" 2>/dev/null || { tail -n 30 "$WORK/medic.log" >&2; die "medic exited during startup"; }
    ADDR=$(grep '"listening"' "$WORK/medic.log" 2>/dev/null |
        grep -o '"addr" *: *"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/' || true)
    [ -n "$ADDR" ] && curl -fsS -o /dev/null --max-time 1 "http://$ADDR/healthz" 2>/dev/null && break
    sleep 0.1
done
[ -n "$ADDR" ] || die "medic did not start"

echo "== soak: $SOAK_ALERTS alerts at $SOAK_RATE/s (0: unpaced), $SOAK_BATCH per delivery, $SOAK_SENDERS senders, retention $SOAK_RETENTION, $SOAK_STORE"
echo "== $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr), $("$MEDIC" --version)"

# The load generator: fires and resolves SOAK_ALERTS distinct alerts; writes the number
# sent so far and each delivery's latency to files the sampler reads.
python3 - "$ADDR" "$TOKEN" "$SOAK_ALERTS" "$SOAK_BATCH" "$SOAK_SENDERS" "$WORK" "$SOAK_RATE" <<'PY' &
import http.client, json, os, sys, threading, time

addr, token, total, batch, senders, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
rate = float(sys.argv[7])
began = time.monotonic()
host, port = addr.rsplit(":", 1)
lock = threading.Lock()
state = {"next": 0, "sent": 0, "failed": 0}
lat = open(f"{work}/latency", "a", buffering=1)

def alert(n, status, starts):
    name = "SoakFixed" if n % 10 == 0 else "SoakIgnored"
    return {
        "status": status,
        "labels": {"alertname": name, "instance": f"node-{n}:9100", "job": "node", "severity": "warning"},
        "annotations": {"summary": f"{name} on node-{n}"},
        "startsAt": starts,
        "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example:9090/graph",
        "fingerprint": f"{n:016x}",
    }

def body(first, count, status, starts):
    return json.dumps({
        "version": "4", "receiver": "medic", "status": status,
        "alerts": [alert(n, status, starts) for n in range(first, first + count)],
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093", "groupKey": "{}:{}", "truncatedAlerts": 0,
    })

def post(conn, payload):
    started = time.monotonic()
    conn.request("POST", "/webhook", payload, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    r = conn.getresponse()
    r.read()
    lat.write(f"{time.monotonic() - started:.6f}\n")
    return r.status

def sender():
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    while True:
        with lock:
            first = state["next"]
            if first >= total:
                return
            count = min(batch, total - first)
            state["next"] = first + count
        if rate > 0:
            # Alert number `first` is due `first / rate` seconds after the start.
            time.sleep(max(0.0, began + first / rate - time.monotonic()))
        starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for status in ("firing", "resolved"):
            code = post(conn, body(first, count, status, starts))
            if code != 200:
                with lock:
                    state["failed"] += 1
                print(f"soak: a delivery was answered {code}", file=sys.stderr)
        with lock:
            state["sent"] += count
            with open(f"{work}/sent.tmp", "w") as f:
                f.write(f"{state['sent']} {state['failed']}\n")
            os.replace(f"{work}/sent.tmp", f"{work}/sent")

threads = [threading.Thread(target=sender) for _ in range(senders)]
for t in threads: t.start()
for t in threads: t.join()
open(f"{work}/done", "w").close()
PY
LOAD_PID=$!

# The database's size and (SQLite) its WAL's, in bytes.
size() {
    if [ "$SOAK_STORE" = sqlite ]; then
        echo "$(stat -c %s "$WORK/medic.db" 2>/dev/null || echo 0) $(stat -c %s "$WORK/medic.db-wal" 2>/dev/null || echo 0)"
    else
        echo "$(psql "$URL" -tAc "SELECT pg_database_size(current_database())") 0"
    fi
}

counts() {
    local sql="SELECT (SELECT COUNT(*) FROM incidents) || ' ' || (SELECT COUNT(*) FROM audit)"
    if [ "$SOAK_STORE" = sqlite ]; then
        sqlite3 -readonly "$WORK/medic.db" ".timeout 5000" "$sql" 2>/dev/null || echo "? ?"
    else
        psql "$URL" -tAc "$sql"
    fi
}

# p50, p99 and max (ms) of the latencies written since the last call.
LAT_SEEN=0
latency() {
    local total
    total=$(wc -l <"$WORK/latency" 2>/dev/null || echo 0)
    tail -n +"$((LAT_SEEN + 1))" "$WORK/latency" 2>/dev/null | head -n "$((total - LAT_SEEN))" |
        sort -g | awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "- - -"; exit }
            p50 = v[int(NR * 0.5) + 1]; p99 = v[int(NR * 0.99) + 1]; if (p99 == "") p99 = v[NR]
            printf "%.1f %.1f %.1f\n", p50 * 1000, p99 * 1000, v[NR] * 1000 }'
    LAT_SEEN=$total
}

START=$(date +%s)
DONE_AT=
printf '%8s %10s %12s %12s %10s %10s %8s %8s %8s\n' seconds alerts db_bytes wal_bytes incidents audit p50_ms p99_ms max_ms
while :; do
    sleep "$SOAK_SAMPLE"
    kill -0 "$MEDIC_PID" 2>/dev/null || { tail -n 30 "$WORK/medic.log" >&2; die "medic exited during the soak"; }
    now=$(date +%s)
    read -r sent failed <"$WORK/sent" 2>/dev/null || { sent=0; failed=0; }
    read -r incidents audit <<<"$(counts)"
    latency >"$WORK/latency.now" # not in a subshell: it remembers where it stopped
    read -r p50 p99 max <"$WORK/latency.now"
    read -r db wal <<<"$(size)"
    printf '%8d %10d %12d %12d %10s %10s %8s %8s %8s\n' $((now - START)) "$sent" "$db" "$wal" "$incidents" "$audit" "$p50" "$p99" "$max"
    if [ -z "$DONE_AT" ] && [ -e "$WORK/done" ]; then
        DONE_AT=$now
    fi
    if [ -n "$DONE_AT" ] && [ $((now - DONE_AT)) -ge "$SOAK_TAIL" ]; then
        break
    fi
done
wait "$LOAD_PID" || die "the load generator failed"
LOAD_PID=
read -r sent failed <"$WORK/sent"
[ "$failed" -eq 0 ] || die "$failed deliveries were not answered 200"

echo "== pruning, as medic logged it"
python3 - "$WORK/medic.log" <<'PY'
import json, sys
def field(p, k):
    return p.get(k, p.get("fields", {}).get(k)) or 0
passes = []
for line in open(sys.argv[1]):
    try:
        p = json.loads(line)
    except ValueError:
        continue
    if str(field(p, "message")).startswith("retention: removed"):
        passes.append(p)
print("passes that removed something:", len(passes))
for k in ("incidents", "audit_entries", "batches"):
    print(f"{k} removed" if k != "batches" else "batches", sum(field(p, k) for p in passes))
print("longest batch, waiting for the writer included:", max([field(p, "longest_batch_ms") for p in passes] or [0]), "ms")
print("longest a batch held the writer (its commit aside):", max([field(p, "longest_hold_ms") for p in passes] or [0]), "ms")
PY
echo "== how long each batch held the writer (medic_retention_batch_duration_seconds)"
curl -fsS "http://$ADDR/metrics" | awk '
    /^medic_retention_batch_duration_seconds_bucket/ {
        le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le)
        n = $2 - prev; prev = $2
        if (n > 0) printf "  <= %s s: %d\n", le, n
    }'
echo "== medic audit verify"
"$MEDIC" audit verify --config "$WORK/medic.toml"
