#!/usr/bin/env bash
# How long `medic postmortem` takes on a large SQLite store.
#
#     scripts/bench-postmortem.sh                    (BENCH_INCIDENTS=1000000)
#     MEDIC_BIN=target/release/medic scripts/bench-postmortem.sh
#
# Makes a store with BENCH_INCIDENTS incidents over 60 days (written straight into the
# database by Python's sqlite3, after medic created and migrated it; two audit entries
# each): 40% escalated `requested` on route `restart`, in storm groups, the newest 300 of
# them with a failing run in their timelines; 30% fixed automatically; 30% of 100 alerts
# with no runbook. Then times three runs of `medic postmortem` for: a storm member whose
# route failed at the same step many times, an alert with no runbook (its count scans 30
# days of incidents), and an incident fixed automatically.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${BENCH_INCIDENTS:-1000000}
if [ -n "${MEDIC_BIN:-}" ]; then MEDIC=$MEDIC_BIN; else cargo build --release -q; MEDIC=target/release/medic; fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/medic-bench-postmortem.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/runbooks" "$WORK/data"
echo 'log("restart");' >"$WORK/runbooks/restart.rhai"
cat >"$WORK/medic.toml" <<TOML
[store]
url = "sqlite://$WORK/data/medic.db"

[runbooks]
dir = "$WORK/runbooks"

[escalation]
notify = ["escalations"]

[[escalation.channels]]
name = "escalations"
type = "file"
path = "$WORK/escalations.jsonl"

[[routes]]
name = "restart"
matchers = ['alertname="ServiceDown"']
runbook = "restart.rhai"
TOML
# Creates and migrates the store (and answers 1: no such incident).
"$MEDIC" postmortem --config "$WORK/medic.toml" 00000000000000000000000000 2>/dev/null || true
echo "filling the store with $N incidents..."
IDS=$(python3 - "$WORK/data/medic.db" "$N" <<'PY'
import json, random, sqlite3, sys, time
path, n = sys.argv[1], int(sys.argv[2])
B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
def ulid(ms):
    v = (ms << 80) | random.getrandbits(80)
    return "".join(B32[(v >> (5 * i)) & 31] for i in range(25, -1, -1))
def stamp(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".%06dZ" % (ms % 1000 * 1000)
c = sqlite3.connect(path)
c.execute("PRAGMA synchronous=OFF")
now = int(time.time() * 1000)
start, step = now - 60 * 86400 * 1000, 60 * 86400 * 1000 // n
cols = ("id, fingerprint, alertname, labels, annotations, generator_url, starts_at, state, is_open, reason, "
        "outcome, route, runbook, deliveries, created_at, updated_at, last_seen_at, resolved_at, attempts, "
        "escalation_group, escalated_at")
insert = "INSERT INTO incidents (%s) VALUES (%s)" % (cols, ",".join("?" * 21))
rows, audit, groups, sizes, failures, fixed, unrouted = [], [], [], {}, [], None, None
seq, gid = c.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()[0], None
for k in range(n):
    ms = start + k * step
    iid, at, kind = ulid(ms), stamp(ms), k % 10
    group = None
    if kind < 4:
        alert, route, rb, reason, outcome = "ServiceDown", "restart", "restart.rhai", "requested", "resolved_after_escalation"
        if gid is None or sizes[gid] == 3:
            gid = ulid(ms); sizes[gid] = 0; groups.append([gid, route, reason, at, 0, iid])
        sizes[gid] += 1; group = gid; failures.append(iid)
    elif kind < 7:
        alert, route, rb, reason, outcome = "ServiceDown", "restart", "restart.rhai", None, "auto_remediated"
        fixed = iid
    else:
        alert, route, rb, reason, outcome = "Alert%03d" % (k % 100), None, None, "no_runbook", "resolved_after_escalation"
        unrouted = iid
    labels = json.dumps({"alertname": alert, "instance": "host%05d:9100" % (k % 10000)})
    rows.append((iid, "fp%05d" % (k % 10000), alert, labels, "{}", "", at, "resolved", 0, reason, outcome,
                 route, rb, 1, at, at, at, stamp(ms + 60000), 1 if rb else 0, group, at if reason else None))
    for event, detail in (("incident_opened", '{"starts_at":"%s"}' % at), ("state_changed", '{"to":"resolved"}')):
        seq += 1; audit.append((seq, at, event, iid, detail, "", ""))
    if len(rows) == 50000:
        c.executemany(insert, rows); c.executemany("INSERT INTO audit VALUES (?,?,?,?,?,?,?)", audit)
        rows, audit = [], []
c.executemany(insert, rows); c.executemany("INSERT INTO audit VALUES (?,?,?,?,?,?,?)", audit)
for g in groups:
    g[4] = sizes[g[0]]
c.executemany("INSERT INTO escalation_groups (id, route, reason, opened_at, size, leader) VALUES (?,?,?,?,?,?)", groups)
run = [("run_started", {"runbook": "restart.rhai", "route": "restart", "attempt": 1}),
       ("step_started", {"step": "exec", "args": {"program": "/usr/bin/systemctl", "path": "/usr/bin/systemctl", "args": ["restart", "web"]}}),
       ("step_finished", {"step": "exec", "program": "/usr/bin/systemctl", "code": 1, "duration_ms": 40, "stderr": "Job for web.service failed.\n"}),
       ("run_finished", {"result": "stopped", "reason": "requested", "message": "restart failed"}),
       ("state_changed", {"from": "remediating", "to": "escalated", "reason": "requested"})]
for iid in failures[-300:]:
    for event, detail in run:
        seq += 1
        c.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?)", (seq, stamp(now - 1000), event, iid, json.dumps(detail), "", ""))
c.commit()
print(failures[-1], unrouted, fixed)
PY
)
read -r STORM UNROUTED FIXED <<<"$IDS"
echo "store: $(du -h "$WORK/data/medic.db" | cut -f1)"
TIMEFORMAT='%R s'
for what in "storm member, failing step seen before:$STORM" "alert with no runbook:$UNROUTED" "fixed automatically:$FIXED"; do
    id=${what##*:}
    for run in 1 2 3; do
        t=$( { time "$MEDIC" postmortem --config "$WORK/medic.toml" --tz UTC "$id" >/dev/null; } 2>&1 )
        echo "${what%%:*} (run $run): $t"
    done
done
