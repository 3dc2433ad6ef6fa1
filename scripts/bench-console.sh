#!/usr/bin/env bash
# The console's render time and page weight with 10,000 incidents.
#
#     scripts/bench-console.sh                 (BENCH_INCIDENTS=10000, BENCH_REQUESTS=50)
#     MEDIC_BIN=target/release/medic scripts/bench-console.sh
#
# Starts a release medic on SQLite with one console user, posts BENCH_INCIDENTS new alerts
# (100 a delivery; no route takes them, so each is escalated to a file channel), logs in,
# then times BENCH_REQUESTS sequential GETs of: the list's first page, a deep page (page
# 150, offset 7,450), and one incident's page. Prints median and p90 of curl's total
# time, and each page's weight: its HTML, plus the CSS and JS it loads.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${BENCH_INCIDENTS:-10000}
R=${BENCH_REQUESTS:-50}
if [ -n "${MEDIC_BIN:-}" ]; then MEDIC=$MEDIC_BIN; else cargo build --release -q; MEDIC=target/release/medic; fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/medic-bench-console.XXXXXX")
PID=
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
TOKEN="bench-$RANDOM$RANDOM"
HASH=$(printf '%s\n' 'bench password' | "$MEDIC" hash-password)
mkdir -p "$WORK/runbooks"
cat >"$WORK/medic.toml" <<EOF
[server]
listen = "127.0.0.1:0"
webhook_token = "$TOKEN"

[store]
url = "sqlite://$WORK/medic.db"

[runbooks]
dir = "$WORK/runbooks"

[escalation]
notify = ["escalations"]

[[escalation.channels]]
name = "escalations"
type = "file"
path = "$WORK/escalations.jsonl"

[[ui.users]]
name = "bench"
password_hash = "$HASH"
role = "responder"
EOF
"$MEDIC" serve --config "$WORK/medic.toml" --log-format json >"$WORK/medic.log" 2>&1 &
PID=$!
ADDR=
for _ in $(seq 300); do
    ADDR=$(grep -o '"addr" *: *"[^"]*"' "$WORK/medic.log" 2>/dev/null | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/' || true)
    [ -n "$ADDR" ] && curl -fsS -o /dev/null "http://$ADDR/healthz" 2>/dev/null && break
    sleep 0.1
done
[ -n "$ADDR" ] || { tail "$WORK/medic.log" >&2; exit 1; }
echo "medic at $ADDR; posting $N alerts"
for ((d = 0; d < N / 100; d++)); do
    alerts=
    for ((i = 0; i < 100; i++)); do
        n=$((d * 100 + i))
        [ -n "$alerts" ] && alerts+=,
        alerts+="{\"status\":\"firing\",\"labels\":{\"alertname\":\"BenchDown\",\"instance\":\"host-$n\",\"severity\":\"critical\"},\"annotations\":{\"summary\":\"host-$n is down\"},\"startsAt\":\"2026-11-23T10:00:00Z\",\"endsAt\":\"0001-01-01T00:00:00Z\",\"generatorURL\":\"http://prometheus.example:9090/graph\",\"fingerprint\":\"$(printf '%016x' "$n")\"}"
    done
    curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        --data-binary "{\"version\":\"4\",\"status\":\"firing\",\"receiver\":\"medic\",\"groupKey\":\"{}\",\"groupLabels\":{},\"commonLabels\":{},\"commonAnnotations\":{},\"externalURL\":\"http://am.example\",\"truncatedAlerts\":0,\"alerts\":[$alerts]}" \
        "http://$ADDR/webhook"
done
sleep 3   # let the escalations' notifications go out
JAR=$WORK/cookies
CSRF=$(curl -fsS -c "$JAR" "http://$ADDR/ui/login" | grep -o 'name="csrf" value="[^"]*"' | sed 's/.*value="//; s/"$//')
curl -fsS -o /dev/null -b "$JAR" -c "$JAR" --data-urlencode "csrf=$CSRF" --data-urlencode name=bench \
    --data-urlencode 'password=bench password' "http://$ADDR/ui/login"
ID=$(curl -fsS -b "$JAR" "http://$ADDR/ui?page=3" | grep -o 'href="/ui/incidents/[^"]*"' | head -n 1 | sed 's/.*incidents\///; s/"$//')
CSS=$(curl -fsS "http://$ADDR/ui/static/medic.css" | wc -c)
JS=$(curl -fsS "http://$ADDR/ui/static/refresh.js" | wc -c)
echo "incidents: $N; requests per page: $R; CSS $CSS bytes, JS $JS bytes"
printf '%-28s %9s %9s %9s %12s\n' page median_ms p90_ms html_B html+css+js_B
for path in "/ui" "/ui?page=150" "/ui/incidents/$ID"; do
    html=$(curl -fsS -b "$JAR" "http://$ADDR$path" | wc -c)
    extra=$CSS; [ "${path#/ui/incidents}" = "$path" ] && extra=$((CSS + JS))
    for ((i = 0; i < R; i++)); do
        curl -fsS -o /dev/null -b "$JAR" -w '%{time_total}\n' "http://$ADDR$path"
    done | sort -n | awk -v p="$path" -v h="$html" -v w="$((html + extra))" \
        '{ t[NR] = $1 * 1000 } END { printf "%-28s %9.2f %9.2f %9d %12d\n", (p ~ /incidents/ ? "/ui/incidents/{id}" : p), t[int((NR + 1) / 2)], t[int(NR * 0.9 + 0.999)], h, w }'
done
