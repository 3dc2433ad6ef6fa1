#!/usr/bin/env bash
# Makes the upgrade fixture of a release: a database written by that release's medic,
# holding every kind of fact medic keeps, for tests/upgrade.rs to open with the code
# under test. A later medic must start on a database an earlier release wrote (migrate it,
# list its incidents, extend its audit chain, finish what it left pending); the fixture is
# that database, made once per release and committed. See docs/upgrading.md.
#
#   scripts/make-upgrade-fixture.sh [MEDIC_BIN]      (or MEDIC_BIN=... in the environment)
#
# MEDIC_BIN is the release's binary, built from the release's commit and copied out of
# the target directory (a later build would overwrite it). For each store, the script
# starts it on a fresh database in a temporary directory with
# tests/fixtures/upgrade/medic.toml and its runbooks, posts webhooks (and API calls)
# so that the database holds:
#
#   - an incident remediated (`exec("true")`) and resolved, auto_remediated;
#   - one escalated no_runbook, delivered twice, whose first tier was sent and whose
#     second tier (100 years away) is still pending in the outbox;
#   - one escalated by its runbook (requested) and acknowledged through the API;
#   - a failed run (runbook_error) that opened a breaker, then resolved after escalation;
#   - a storm group: three alerts refused circuit_open by that breaker, whose summary is
#     pending (due when the storm window ends);
#   - one ignored (an `ignore = true` route), one invalid_alert (a label value with a NUL);
#   - the pause switch set, an alert escalated paused meanwhile, and the switch cleared;
#   - the audit chain of all of it;
#
# stops medic with SIGTERM and writes, under tests/fixtures/upgrade/v<version>/:
#
#   medic.sqlite           the SQLite database, checkpointed (no -wal) and vacuumed
#   medic.postgres.sql     `pg_dump --no-owner --no-privileges` of the PostgreSQL database
#                          (plain SQL, for psql; pg_dump's \restrict lines left out)
#   expected.json          per store, the incidents as the API listed them before the stop
#
# Environment:
#   MEDIC_FIXTURE_VERSION   the directory's version (default: what `MEDIC_BIN --version` says)
#   MEDIC_FIXTURE_POSTGRES  the PostgreSQL server (default postgres://postgres@127.0.0.1:5432);
#                           a database of its own is created there and dropped afterwards
#   MEDIC_FIXTURE_STORES    which stores to make (default "sqlite postgres"; a fixture to
#                           commit has both: the directory is made anew each time)
#
# Needs curl, jq, sqlite3, psql and pg_dump. Exits non-zero if any step fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
FIXTURES=$ROOT/tests/fixtures/upgrade

BIN=${1:-${MEDIC_BIN:-}}
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
    echo "usage: $0 MEDIC_BIN   (the release's medic binary; or set MEDIC_BIN)" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
for tool in curl jq sqlite3 psql pg_dump; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
done

VERSION=${MEDIC_FIXTURE_VERSION:-$("$BIN" --version | awk '{ print $2; exit }')}
OUT=$FIXTURES/v$VERSION
PG_SERVER=${MEDIC_FIXTURE_POSTGRES:-postgres://postgres@127.0.0.1:5432}
PG_SERVER=${PG_SERVER%/}
STORES=${MEDIC_FIXTURE_STORES:-sqlite postgres}

export MEDIC_WEBHOOK_TOKEN=fixture-webhook-token
export MEDIC_API_TOKEN=fixture-api-token

# The firing period of every alert: fixed, so that both stores hold the same alerts.
STARTS_AT=2026-12-01T00:00:00Z
ENDS_AT=2026-12-01T00:30:00Z

WORK=$(mktemp -d)
PID=
PG_DB=
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID" 2>/dev/null || true
    fi
    if [ -n "$PG_DB" ]; then
        psql -q "$PG_SERVER/postgres" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say() {
    printf '== %s\n' "$*"
}

# --- talking to medic --------------------------------------------------------------

# alert NAME INSTANCE STATUS FINGERPRINT [EXTRA_LABELS_JSON]: one alert as Alertmanager sends it.
alert() {
    local ends=0001-01-01T00:00:00Z extra=${5:-}
    if [ "$3" = resolved ]; then ends=$ENDS_AT; fi
    if [ -z "$extra" ]; then extra='{}'; fi
    jq -cn --arg name "$1" --arg instance "$2" --arg status "$3" --arg fp "$4" \
        --argjson extra "$extra" --arg starts "$STARTS_AT" --arg ends "$ends" '{
        status: $status,
        labels: ({alertname: $name, instance: $instance, severity: "critical", job: "fixture"} + $extra),
        annotations: {summary: "\($name) on \($instance)"},
        startsAt: $starts, endsAt: $ends,
        generatorURL: "http://prometheus.example:9090/graph",
        fingerprint: $fp
    }'
}

# post ALERT_JSON...: one webhook delivery of these alerts; fails unless medic answers 200.
post() {
    local body
    body=$(jq -cs '{
        receiver: "medic", status: (if any(.[]; .status == "firing") then "firing" else "resolved" end),
        alerts: ., groupLabels: {}, commonLabels: {}, commonAnnotations: {},
        externalURL: "http://alertmanager.example:9093", version: "4",
        groupKey: "{}:{}", truncatedAlerts: 0
    }' <<<"$(printf '%s\n' "$@")")
    curl -sS --fail-with-body -o /dev/null -H "Authorization: Bearer $MEDIC_WEBHOOK_TOKEN" \
        -H 'Content-Type: application/json' --data-binary "$body" "$URL/webhook"
}

# api METHOD PATH [BODY]: an API call with the API token; prints the answer.
api() {
    curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $MEDIC_API_TOKEN" \
        -H 'Content-Type: application/json' ${3:+--data-binary "$3"} "$URL$2"
}

incidents() {
    api GET '/api/v1/incidents?limit=1000'
}

# wait_for WHAT JQ_FILTER: polls the incident list until the filter is true (30 s).
wait_for() {
    local i
    for i in $(seq 300); do
        if incidents | jq -e "$2" >/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "timed out waiting for: $1 (after $i tries); the incidents:" >&2
    incidents | jq . >&2
    exit 1
}

# id_of FINGERPRINT: the id of the (newest) incident of that fingerprint.
id_of() {
    incidents | jq -er --arg fp "$1" '[.incidents[] | select(.fingerprint == $fp)][0].id'
}

# wait_sent FILE JQ_FILTER: waits until a notification for which the filter is true was
# written to data/FILE (30 s).
wait_sent() {
    local i
    for i in $(seq 300); do
        if [ -f "$DIR/data/$1" ] && jq -e "$2" "$DIR/data/$1" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "timed out waiting for a notification in $1 with $2 (after $i tries)" >&2
    exit 1
}

# sent_to_oncall ID: waits until the first tier of incident ID's escalation was sent.
sent_to_oncall() {
    wait_sent oncall.jsonl "select(.incident.id == \"$1\")"
}

# --- one store ----------------------------------------------------------------------

# run_release STORE URL: runs the release on a fresh database at URL and fills it.
run_release() {
    local store=$1 url=$2 i
    DIR=$WORK/$store
    mkdir -p "$DIR/data"
    cp "$FIXTURES/medic.toml" "$DIR/medic.toml"
    cp -r "$FIXTURES/runbooks" "$DIR/runbooks"

    say "$store: starting $("$BIN" --version | head -1) on $url"
    (cd "$DIR" && MEDIC_STORE_URL=$url RUST_LOG=info exec "$BIN" --log-format json \
        serve --config medic.toml 2>"$DIR/medic.log" </dev/null >/dev/null) &
    PID=$!
    URL=
    for i in $(seq 300); do
        URL=$(jq -rR 'fromjson? | select(.message == "listening") | .addr' "$DIR/medic.log")
        [ -n "$URL" ] && break
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$URL" ]; then
        echo "medic did not start (after $i tries); its log:" >&2
        cat "$DIR/medic.log" >&2
        exit 1
    fi
    URL=http://$URL

    say "$store: remediated and resolved"
    post "$(alert FixtureRemediate web1 firing f1c7000000000001)"
    wait_for "remediation" '.incidents[] | select(.fingerprint == "f1c7000000000001" and .state == "verifying")'
    post "$(alert FixtureRemediate web1 resolved f1c7000000000001)"
    wait_for "resolution" '.incidents[] | select(.fingerprint == "f1c7000000000001" and .state == "resolved")'

    say "$store: escalated no_runbook, its second tier pending"
    post "$(alert FixtureUnrouted db1 firing f1c7000000000002)"
    post "$(alert FixtureUnrouted db1 firing f1c7000000000002)"
    wait_for "escalation" '.incidents[] | select(.fingerprint == "f1c7000000000002" and .state == "escalated")'
    sent_to_oncall "$(id_of f1c7000000000002)"

    say "$store: escalated by its runbook, then acknowledged"
    post "$(alert FixtureHandover app1 firing f1c7000000000003)"
    wait_for "hand-over" '.incidents[] | select(.fingerprint == "f1c7000000000003" and .state == "escalated")'
    local handover
    handover=$(id_of f1c7000000000003)
    sent_to_oncall "$handover"
    api POST "/api/v1/incidents/$handover/ack" '{"by": "fixture"}' >/dev/null
    wait_for "ack" '.incidents[] | select(.fingerprint == "f1c7000000000003" and .state == "acknowledged")'

    say "$store: a failed run opens a breaker; a storm of circuit_open behind it"
    post "$(alert FixtureFlaky db2 firing f1c7000000000004)"
    wait_for "failure" '.incidents[] | select(.fingerprint == "f1c7000000000004" and .state == "escalated")'
    for i in $(seq 100); do
        api GET /api/v1/breakers | jq -e '.breakers[] | select(.route == "flaky")' >/dev/null && break
        sleep 0.1
    done
    sent_to_oncall "$(id_of f1c7000000000004)"
    post "$(alert FixtureFlaky db2 firing f1c7000000000005 '{"volume": "a"}')" \
        "$(alert FixtureFlaky db2 firing f1c7000000000006 '{"volume": "b"}')" \
        "$(alert FixtureFlaky db2 firing f1c7000000000007 '{"volume": "c"}')"
    wait_for "storm" '[.incidents[] | select(.reason == "circuit_open")] | length == 3'
    wait_sent oncall.jsonl 'select(.reason == "circuit_open")'
    post "$(alert FixtureFlaky db2 resolved f1c7000000000004)"
    wait_for "resolution after escalation" '.incidents[] | select(.fingerprint == "f1c7000000000004" and .state == "resolved")'

    say "$store: ignored, invalid"
    post "$(alert FixtureWatchdog mon1 firing f1c7000000000008)"
    wait_for "ignored" '.incidents[] | select(.fingerprint == "f1c7000000000008" and .state == "ignored")'
    post "$(alert FixtureInvalid bad1 firing f1c7000000000009 '{"note": "a\u0000b"}')"
    wait_for "invalid" '.incidents[] | select(.fingerprint == "f1c7000000000009" and .reason == "invalid_alert")'
    sent_to_oncall "$(id_of f1c7000000000009)"

    say "$store: paused, an alert escalated paused, resumed"
    api POST /api/v1/pause '{"by": "fixture", "reason": "upgrade fixture"}' >/dev/null
    post "$(alert FixtureRemediate web2 firing f1c700000000000a)"
    wait_for "paused" '.incidents[] | select(.fingerprint == "f1c700000000000a" and .reason == "paused")'
    sent_to_oncall "$(id_of f1c700000000000a)"
    api POST /api/v1/resume '{"by": "fixture"}' >/dev/null

    incidents | jq --arg store "$store" '{($store): [.incidents[] |
        {id, alertname, fingerprint, state, reason, outcome}]}' >"$WORK/expected.$store.json"

    say "$store: stopping medic (SIGTERM)"
    kill -TERM "$PID"
    local status=0
    wait "$PID" || status=$?
    PID=
    if [ "$status" -ne 0 ]; then
        echo "medic exited $status on SIGTERM; its log:" >&2
        cat "$DIR/medic.log" >&2
        exit 1
    fi
    if ! (cd "$DIR" && MEDIC_STORE_URL=$url "$BIN" audit verify --config medic.toml); then
        echo "the audit chain does not verify" >&2
        exit 1
    fi
}

rm -rf "$OUT"
mkdir -p "$OUT"
for store in $STORES; do
    case $store in
    sqlite)
        run_release sqlite sqlite://data/medic.db
        sqlite3 "$DIR/data/medic.db" 'PRAGMA wal_checkpoint(TRUNCATE); VACUUM;' >/dev/null
        if [ -s "$DIR/data/medic.db-wal" ]; then
            echo "the SQLite database still has a write-ahead log" >&2
            exit 1
        fi
        cp "$DIR/data/medic.db" "$OUT/medic.sqlite"
        ;;
    postgres)
        PG_DB=medic_fixture_$(date +%s)_$$
        psql -q "$PG_SERVER/postgres" -c "CREATE DATABASE $PG_DB" >/dev/null
        run_release postgres "$PG_SERVER/$PG_DB"
        # \restrict and \unrestrict (psql meta-commands of recent pg_dumps, with a random
        # key) are left out: the dump is reviewed in the repository, and loads with any psql.
        pg_dump --no-owner --no-privileges "$PG_SERVER/$PG_DB" \
            | grep -v -e '^\\restrict ' -e '^\\unrestrict ' >"$OUT/medic.postgres.sql"
        psql -q "$PG_SERVER/postgres" -c "DROP DATABASE $PG_DB" >/dev/null
        PG_DB=
        ;;
    *)
        echo "unknown store $store (sqlite, postgres)" >&2
        exit 2
        ;;
    esac
done

jq -s --arg version "$VERSION" '{release: $version, incidents: add}' \
    "$WORK"/expected.*.json >"$OUT/expected.json"
say "wrote ${OUT#"$ROOT"/}:"
for file in "$OUT"/*; do
    printf '   %-22s %s bytes\n' "$(basename "$file")" "$(wc -c <"$file")"
done
