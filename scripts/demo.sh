#!/usr/bin/env bash
# The self-healing loop with real parts, on loopback:
#
#   a small HTTP service ◀── scrape (1s) ── Prometheus ── up == 0 ──▶ Alertmanager ──▶ medic
#        ▲                                                                                │
#        └──────────── the runbook restarts it (exec) ◀──────────────────────────────────┘
#
#   scripts/demo.sh            kill the service; medic restarts it; the alert resolves and
#                              the incident ends auto_remediated, with its whole timeline
#   scripts/demo.sh --broken   the restart command fails: medic escalates, by mail
#
# Needs prometheus, prometheus-alertmanager and a python3 with aiosmtpd (scripts/test.sh
# installs them, aiosmtpd in a virtual environment it exports as MEDIC_PYTHON).
# Environment: MEDIC_BIN (else it builds medic), MEDIC_PYTHON (python3), MEDIC_PROMETHEUS_BIN,
# MEDIC_ALERTMANAGER_BIN, DEMO_STORE_URL (the store; a SQLite file in the work directory
# unless set), DEMO_OUT (a directory for incident.json and mail.json),
# DEMO_KEEP=1 (keep the work directory).
set -euo pipefail

MODE=heal
case "${1:-}" in
    "") ;;
    --broken) MODE=broken ;;
    *) echo "usage: $0 [--broken]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
START_NS=$(date +%s%N)
say() {
    local tenths=$((($(date +%s%N) - START_NS) / 100000000))
    printf '\033[1m[demo %3d.%ds]\033[0m %s\n' $((tenths / 10)) $((tenths % 10)) "$*"
}
die() { say "FAILED: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }

MEDIC=${MEDIC_BIN:-}
if [ -z "$MEDIC" ]; then
    (cd "$ROOT" && cargo build --quiet)
    MEDIC=${CARGO_TARGET_DIR:-$ROOT/target}/debug/medic
fi
PROMETHEUS=${MEDIC_PROMETHEUS_BIN:-$(command -v prometheus || true)}
ALERTMANAGER=${MEDIC_ALERTMANAGER_BIN:-$(command -v prometheus-alertmanager || command -v alertmanager || true)}
[ -x "$PROMETHEUS" ] || { echo "prometheus is not installed (scripts/test.sh installs it)" >&2; exit 1; }
[ -x "$ALERTMANAGER" ] || { echo "alertmanager is not installed (scripts/test.sh installs it)" >&2; exit 1; }
SMTP_PYTHON=${MEDIC_PYTHON:-python3}
"$SMTP_PYTHON" -c 'import aiosmtpd' 2>/dev/null || { echo "$SMTP_PYTHON has no aiosmtpd (scripts/test.sh installs it and sets MEDIC_PYTHON)" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -f "$WORK/service.pid" ]; then kill "$(cat "$WORK/service.pid")" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    if [ "${DEMO_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SVC_PORT=$(free_port); PROM_PORT=$(free_port); AM_PORT=$(free_port); MEDIC_PORT=$(free_port); SMTP_PORT=$(free_port)
TOKEN=demo-api-token
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
api() { curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$MEDIC_PORT$1"; }

# --- the service: /metrics on SVC_PORT, its pid in service.pid -----------------------------
cat >"$WORK/service.py" <<'EOF'
import http.server, os, sys
port, pidfile = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"demo_service_info 1\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer.allow_reuse_address = True
server = http.server.HTTPServer(("127.0.0.1", port), H)
with open(pidfile, "w") as f: f.write(str(os.getpid()))
server.serve_forever()
EOF

# The runbook's one command: ask the service manager to start the service again, as
# `systemctl start` would (nothing a step starts outlives the step, so it cannot fork it).
mkdir -p "$WORK/bin" "$WORK/runbooks"  # aiosmtpd creates the Maildir
if [ "$MODE" = heal ]; then
    cat >"$WORK/bin/start-service" <<EOF
#!/bin/sh
touch "$WORK/start.request"
for i in 1 2 3 4 5 6 7 8 9 10; do
    if python3 -c 'import socket; socket.create_connection(("127.0.0.1", $SVC_PORT), 1)' 2>/dev/null; then
        echo "service on 127.0.0.1:$SVC_PORT is listening again"; exit 0
    fi
    sleep 0.2
done
echo "the service did not come up" >&2; exit 1
EOF
else
    cat >"$WORK/bin/start-service" <<'EOF'
#!/bin/sh
echo "starting demo service..."
echo "error: /opt/demo/service.py: No such file or directory" >&2
exit 1
EOF
fi
chmod +x "$WORK/bin/start-service"

cat >"$WORK/runbooks/restart_service.rhai" <<'EOF'
// Restart the service the alert names; escalate if that fails.
log(`${alert.labels.instance} is down: restarting it`);
let r = exec("start-service", []);
if r.code != 0 {
    escalate(`could not restart ${alert.labels.instance}: exit ${r.code}: ${r.stderr}`);
}
log(r.stdout);
EOF

cat >"$WORK/medic.toml" <<EOF
[server]
listen = "127.0.0.1:$MEDIC_PORT"
api_token = "$TOKEN"

[store]
url = "${DEMO_STORE_URL:-sqlite://$WORK/medic.db}"

[runbooks]
dir = "$WORK/runbooks"
allowed_commands = ["start-service"]
exec_path = "$WORK/bin:/usr/local/bin:/usr/bin:/bin"
pass_env = ["LANG", "TZ"]
timeout = "30s"

[[routes]]
name = "service-down"
matchers = ['alertname="DemoServiceDown"']
runbook = "restart_service.rhai"
verify_for = "30s"

[escalation]
notify = ["oncall"]

[[escalation.channels]]
name = "oncall"
type = "email"
smtp = "127.0.0.1:$SMTP_PORT"
tls = "none"
from = "medic@demo.example"
to = ["oncall@demo.example"]
EOF

cat >"$WORK/alertmanager.yml" <<EOF
route:
  receiver: medic
  group_by: ['alertname', 'instance']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: medic
    webhook_configs:
      - url: 'http://127.0.0.1:$MEDIC_PORT/webhook'
        send_resolved: true
EOF

cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 500ms
  evaluation_interval: 1s
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:$AM_PORT']
rule_files: ['$WORK/rules.yml']
scrape_configs:
  - job_name: demo
    static_configs:
      - targets: ['127.0.0.1:$SVC_PORT']
EOF

cat >"$WORK/rules.yml" <<'EOF'
groups:
  - name: demo
    rules:
      - alert: DemoServiceDown
        expr: up{job="demo"} == 0
        labels:
          severity: critical
        annotations:
          summary: "the demo service on {{ $labels.instance }} is down"
          description: "Prometheus cannot scrape {{ $labels.instance }}."
          runbook_url: "https://runbooks.example/demo-service-down"
EOF

# --- start everything ---------------------------------------------------------------------
wait_http() { # URL WHAT
    for _ in $(seq 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
    die "$2 did not come up"
}

"$SMTP_PYTHON" -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$WORK/mail" >"$WORK/smtp.log" 2>&1 &
PIDS+=($!)
"$MEDIC" serve --config "$WORK/medic.toml" >"$WORK/medic.log" 2>&1 &
PIDS+=($!)
"$ALERTMANAGER" --config.file="$WORK/alertmanager.yml" --storage.path="$WORK/am" \
    --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= >"$WORK/alertmanager.log" 2>&1 &
PIDS+=($!)
python3 "$WORK/service.py" "$SVC_PORT" "$WORK/service.pid" >>"$WORK/service.log" 2>&1 &
# The demo's service manager (systemd's part): starts the service when asked.
while :; do
    if [ -f "$WORK/start.request" ]; then
        rm -f "$WORK/start.request"
        python3 "$WORK/service.py" "$SVC_PORT" "$WORK/service.pid" >>"$WORK/service.log" 2>&1 </dev/null &
    fi
    sleep 0.1
done &
PIDS+=($!)
"$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --rules.alert.resend-delay=1s >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MEDIC_PORT/readyz" medic
wait_http "http://127.0.0.1:$AM_PORT/-/ready" Alertmanager
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" Prometheus
say "medic, Alertmanager, Prometheus and the service are running ($MODE mode)"

# Prometheus publishes its targets a few seconds after start: wait until it scraped the service.
for i in $(seq 600); do
    health=$(curl -fsS "http://127.0.0.1:$PROM_PORT/api/v1/targets" 2>/dev/null |
        json 'next((t["health"] for t in d["data"]["activeTargets"]), "none")' 2>/dev/null || echo none)
    [ "$health" = up ] && break
    [ "$i" = 600 ] && die "Prometheus never scraped the service"
    sleep 0.1
done
say "Prometheus scrapes the service: up == 1"

SERVICE_PID=$(cat "$WORK/service.pid")
kill "$SERVICE_PID"
say "killed the service (pid $SERVICE_PID): Prometheus will see up == 0"

# --- watch the incident -------------------------------------------------------------------
last=""
incident_id=""
want=resolved
[ "$MODE" = broken ] && want=escalated
for i in $(seq 1200); do
    list=$(api "/api/v1/incidents?alertname=DemoServiceDown" 2>/dev/null || echo '{"incidents": []}')
    incident_id=$(echo "$list" | json 'd["incidents"][0]["id"] if d["incidents"] else ""')
    state=$(echo "$list" | json 'd["incidents"][0]["state"] if d["incidents"] else "none"')
    if [ "$state" != "$last" ] && [ "$state" != none ]; then
        say "incident $incident_id: $state"
        last=$state
    fi
    [ "$state" = "$want" ] && break
    [ "$i" = 1200 ] && die "the incident never reached $want (last: $last)"
    sleep 0.1
done

incident=$(api "/api/v1/incidents/$incident_id")
[ -n "${DEMO_OUT:-}" ] && echo "$incident" >"$DEMO_OUT/incident.json"
say "timeline:"
echo "$incident" | python3 -c '
import json, sys
inc = json.load(sys.stdin)
for e in inc["timeline"]:
    d = e["detail"]
    extra = {k: d[k] for k in ("from", "to", "reason", "outcome", "step", "code", "message", "how", "channel") if k in d}
    print("    %s  %-24s %s" % (e["at"][11:23], e["event"], json.dumps(extra) if extra else ""))
'

if [ "$MODE" = heal ]; then
    outcome=$(echo "$incident" | json 'd["outcome"]')
    [ "$outcome" = auto_remediated ] || die "outcome is $outcome, not auto_remediated"
    curl -fsS -o /dev/null "http://127.0.0.1:$SVC_PORT/metrics" || die "the service is not up"
    say "healed: the service is back (pid $(cat "$WORK/service.pid")), outcome $outcome, nobody was paged"
else
    for i in $(seq 300); do
        mail=$(find "$WORK/mail/new" -type f 2>/dev/null | head -n 1)
        [ -n "$mail" ] && break
        [ "$i" = 300 ] && die "no escalation mail arrived"
        sleep 0.1
    done
    say "escalated; the mail on-call got:"
    python3 - "$mail" "${DEMO_OUT:-}" <<'EOF'
import email, email.policy, json, os, sys
msg = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
text = msg.get_body(("plain",)).get_content()
html = msg.get_body(("html",)).get_content()
print("    Subject: %s" % msg["Subject"])
print("    To: %s" % msg["To"])
for line in text.splitlines()[:24]:
    print("    | " + line)
if sys.argv[2]:
    json.dump({"headers": {k: str(v) for k, v in msg.items()}, "text": text, "html": html},
              open(os.path.join(sys.argv[2], "mail.json"), "w"))
EOF
fi
