#!/usr/bin/env bash
# The test command of the project: installs what the tests need (only when it
# is missing), builds every target and runs the whole test suite.
#
#   scripts/test.sh
#
# Works from any directory. Exits non-zero if any step fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DEBIAN_FRONTEND=noninteractive

START_TIME=$SECONDS

banner() {
    printf '\n== %s\n' "$*"
}

# Run as root directly, otherwise through sudo.
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    SUDO=(sudo)
fi

# Run a command quietly; show its output only if it fails.
quiet() {
    local log
    log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then
        echo "command failed: $*" >&2
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        quiet "${SUDO[@]}" apt-get update
        APT_UPDATED=1
    fi
    quiet "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "$@"
}

# Some Debian packages start their own system daemon on install. Tests start
# their own instances on free loopback ports, so a daemon started by the
# install is stopped again. Only processes that appeared during the install
# are touched.
#   apt_install_no_daemon PACKAGE SERVICE PROCESS_PATTERN
apt_install_no_daemon() {
    local pkg=$1 service=$2 pattern=$3 before after pid new=()
    before=$(pgrep -f "$pattern" || true)
    apt_install "$pkg"
    after=$(pgrep -f "$pattern" || true)
    for pid in $after; do
        if ! grep -qx "$pid" <<<"$before"; then
            new+=("$pid")
        fi
    done
    [ "${#new[@]}" -eq 0 ] && return 0

    echo "stopping the $service daemon started by the install (pid ${new[*]})"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        "${SUDO[@]}" systemctl stop "$service" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$service" ]; then
        "${SUDO[@]}" "/etc/init.d/$service" stop >/dev/null 2>&1 || true
    fi
    for pid in "${new[@]}"; do
        "${SUDO[@]}" kill "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${new[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        [ "$alive" -eq 0 ] && return 0
        sleep 0.1
    done
    for pid in "${new[@]}"; do
        "${SUDO[@]}" kill -KILL "$pid" 2>/dev/null || true
    done
}

# --- test dependencies --------------------------------------------------------

# Alertmanager, for the end-to-end tests that run a real Alertmanager against
# medic. Exports MEDIC_ALERTMANAGER_BIN.
ensure_alertmanager() {
    local bin=${MEDIC_ALERTMANAGER_BIN:-}
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then
        bin=$(command -v prometheus-alertmanager || command -v alertmanager || true)
    fi
    if [ -z "$bin" ]; then
        echo "installing prometheus-alertmanager"
        apt_install_no_daemon prometheus-alertmanager prometheus-alertmanager \
            '^/usr/bin/prometheus-alertmanager( |$)'
        bin=$(command -v prometheus-alertmanager)
    fi
    export MEDIC_ALERTMANAGER_BIN=$bin
    echo "alertmanager: $MEDIC_ALERTMANAGER_BIN ($("$MEDIC_ALERTMANAGER_BIN" --version 2>&1 | head -1))"
}

# Python SMTP sink (aiosmtpd) for the e-mail notification tests, in a virtual
# environment of the project's own (target/test-venv), never in the system
# interpreter. Exports MEDIC_PYTHON.
ensure_smtp_sink() {
    local venv=${CARGO_TARGET_DIR:-target}/test-venv
    mkdir -p "$(dirname "$venv")"
    if ! "$venv/bin/python" -c 'import aiosmtpd' >/dev/null 2>&1; then
        if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -m ensurepip --version >/dev/null 2>&1; then
            echo "installing python3-venv"
            apt_install python3-venv
        fi
        echo "creating $venv with aiosmtpd"
        rm -rf "$venv"
        quiet python3 -m venv "$venv"
        quiet "$venv/bin/python" -m pip install --quiet aiosmtpd
    fi
    MEDIC_PYTHON=$(cd "$venv/bin" && pwd)/python
    export MEDIC_PYTHON
    echo "smtp sink: $MEDIC_PYTHON ($("$MEDIC_PYTHON" -c 'import aiosmtpd; print("aiosmtpd", aiosmtpd.__version__)'))"
}

# Prometheus server for the end-to-end demo test (scripts/demo.sh). Exports
# MEDIC_PROMETHEUS_BIN.
ensure_prometheus() {
    local bin=${MEDIC_PROMETHEUS_BIN:-}
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then
        bin=$(command -v prometheus || true)
    fi
    if [ -z "$bin" ]; then
        echo "installing prometheus"
        apt_install_no_daemon prometheus prometheus '^/usr/bin/prometheus( |$)'
        bin=$(command -v prometheus)
    fi
    export MEDIC_PROMETHEUS_BIN=$bin
}

# promtool, for the shipped Prometheus alerting rules (packaging/prometheus): Debian's
# prometheus package installs it beside the server. Sets PROMTOOL.
ensure_promtool() {
    PROMTOOL=$(dirname "$MEDIC_PROMETHEUS_BIN")/promtool
    if [ ! -x "$PROMTOOL" ]; then
        PROMTOOL=$(command -v promtool || true)
    fi
    if [ -z "$PROMTOOL" ]; then
        echo "installing prometheus (for promtool)"
        apt_install_no_daemon prometheus prometheus '^/usr/bin/prometheus( |$)'
        PROMTOOL=$(command -v promtool)
    fi
}

# Chromium and its WebDriver server, for the console tests in a real browser
# (tests/browser.rs). Exports MEDIC_CHROMIUM_BIN and MEDIC_CHROMEDRIVER_BIN.
ensure_chromium() {
    local missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
    MEDIC_CHROMIUM_BIN=$(command -v chromium)
    MEDIC_CHROMEDRIVER_BIN=$(command -v chromedriver)
    export MEDIC_CHROMIUM_BIN MEDIC_CHROMEDRIVER_BIN
    echo "chromium: $MEDIC_CHROMIUM_BIN ($("$MEDIC_CHROMIUM_BIN" --version 2>/dev/null | head -1)), $("$MEDIC_CHROMEDRIVER_BIN" --version 2>/dev/null | head -1)"
}

# PostgreSQL server on 127.0.0.1:5432 (trust auth for local connections), for the
# PostgreSQL store: the whole suite runs on it a second time, and the replica
# tests use it always. Databases left by earlier runs (medic_test_*) are dropped.
ensure_postgres() {
    ensure_postgres_running
    ensure_postgres_tls
    local stale
    stale=$(psql -h 127.0.0.1 -U postgres -d postgres -tA \
        -c "SELECT datname FROM pg_database WHERE datname LIKE 'medic\_test\_%'")
    for db in $stale; do
        quiet psql -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db"
    done
    echo "postgresql: $(psql -h 127.0.0.1 -U postgres -d postgres -tA -c 'SHOW server_version'), ssl $(psql -h 127.0.0.1 -U postgres -d postgres -tA -c 'SHOW ssl')"
}

ensure_postgres_running() {
    if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1; then
        return 0
    fi
    if [ ! -d /etc/postgresql ] || [ -z "$(ls -A /etc/postgresql 2>/dev/null)" ]; then
        echo "installing postgresql"
        apt_install postgresql
    fi
    local version
    version=$(ls /etc/postgresql | head -1)
    echo "starting PostgreSQL $version/main"
    "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 60); do
        if pg_isready -q -h 127.0.0.1; then
            return 0
        fi
        sleep 0.5
    done
    echo "PostgreSQL is not accepting connections on 127.0.0.1:5432" >&2
    return 1
}

# TLS on the PostgreSQL server, for the tests of the store URL's sslmode (they fail
# without it). Debian's cluster points ssl_cert_file and ssl_key_file at the snakeoil
# certificate of package ssl-cert; this makes sure the files exist and the server can
# read them, then turns ssl on and reloads. Does nothing when TLS is on already.
ensure_postgres_tls() {
    local psql=(psql -h 127.0.0.1 -U postgres -d postgres -tA -c)
    if [ "$("${psql[@]}" 'SHOW ssl')" = on ]; then
        return 0
    fi
    local cert=/etc/ssl/certs/ssl-cert-snakeoil.pem
    local key=/etc/ssl/private/ssl-cert-snakeoil.key
    if [ ! -f "$cert" ] || ! "${SUDO[@]}" test -f "$key"; then
        echo "creating the snakeoil certificate for PostgreSQL"
        command -v make-ssl-cert >/dev/null || apt_install ssl-cert
        quiet "${SUDO[@]}" make-ssl-cert generate-default-snakeoil
    fi
    # The server reads its key as user postgres, through the key's group ssl-cert.
    local as_postgres=(runuser -u postgres --)
    if [ "$(id -u)" -ne 0 ]; then
        as_postgres=(sudo -u postgres)
    fi
    if ! "${as_postgres[@]}" test -r "$key"; then
        echo "letting PostgreSQL read $key (group ssl-cert), restarting it"
        quiet "${SUDO[@]}" usermod -a -G ssl-cert postgres
        local version
        version=$(ls /etc/postgresql | head -1)
        quiet "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main restart
        ensure_postgres_running
    fi
    echo "turning TLS on in PostgreSQL"
    if [ "$("${psql[@]}" 'SHOW ssl_cert_file')" != "$cert" ]; then
        quiet "${psql[@]}" "ALTER SYSTEM SET ssl_cert_file = '$cert'"
    fi
    if [ "$("${psql[@]}" 'SHOW ssl_key_file')" != "$key" ]; then
        quiet "${psql[@]}" "ALTER SYSTEM SET ssl_key_file = '$key'"
    fi
    quiet "${psql[@]}" "ALTER SYSTEM SET ssl = on"
    quiet "${psql[@]}" "SELECT pg_reload_conf()"
    # The reload is a signal: wait for new sessions to see it.
    for _ in $(seq 20); do
        if [ "$("${psql[@]}" 'SHOW ssl')" = on ]; then
            return 0
        fi
        sleep 0.25
    done
    echo "PostgreSQL did not turn TLS on (see its log): the TLS tests will fail" >&2
    return 1
}

# --- steps --------------------------------------------------------------------

banner "install test dependencies"
ensure_alertmanager
ensure_smtp_sink
ensure_prometheus
ensure_promtool
ensure_postgres
ensure_chromium
command -v curl >/dev/null || apt_install curl   # scripts/demo.sh
command -v systemd-analyze >/dev/null || apt_install systemd   # scripts/check-packaging.sh

# Every integration test file is a module of tests/suite.rs (one test binary); a file
# missing from it would silently not be compiled.
banner "integration test files listed in tests/suite.rs"
for file in tests/*.rs; do
    name=$(basename "$file" .rs)
    [ "$name" = suite ] && continue
    if ! grep -qx "mod $name;" tests/suite.rs; then
        echo "tests/$name.rs is not a module of tests/suite.rs: add \"mod $name;\" there" >&2
        exit 1
    fi
done
echo "ok"

LOCKED=()
if [ -f Cargo.lock ]; then
    LOCKED=(--locked)
fi

banner "cargo build --all-targets${LOCKED:+ ${LOCKED[*]}}"
cargo build --all-targets "${LOCKED[@]}"

# What ships beside the binary: the man page, the shell completions and the systemd unit
# (systemd-analyze verify). A second or two; counted in the summary.
banner "packaging (scripts/check-packaging.sh)"
PACKAGING_LOG=$(mktemp)
set +e
scripts/check-packaging.sh "${CARGO_TARGET_DIR:-target}"/debug/medic 2>&1 | tee "$PACKAGING_LOG"
PACKAGING_STATUS=${PIPESTATUS[0]}
set -e
read -r PACKAGING_PASSED PACKAGING_FAILED < <(
    awk '/^packaging: [0-9]+ passed, [0-9]+ failed$/ { p = $2; f = $4 }
         END { printf "%d %d\n", p, f }' "$PACKAGING_LOG"
)
rm -f "$PACKAGING_LOG"
if [ "$PACKAGING_STATUS" -ne 0 ] && [ "$PACKAGING_FAILED" -eq 0 ]; then PACKAGING_FAILED=1; fi

# The test binaries just built (the library's unit tests, the binary's, and tests/suite.rs),
# run directly rather than through cargo, so that the two stores' passes can run at once:
# most tests wait on processes and timers, not on the CPU.
TEST_BINS=()
while IFS= read -r bin; do TEST_BINS+=("$bin"); done < <(
    cargo test --no-run "${LOCKED[@]}" --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])'
)
if [ "${#TEST_BINS[@]}" -eq 0 ]; then
    echo "cargo test --no-run listed no test binary" >&2
    exit 1
fi

# Runs every test binary with the environment given, into LOG; fails if any of them
# failed, after running them all.
#   run_tests LOG [NAME=VALUE ...]
run_tests() {
    local log=$1 status=0
    shift
    for bin in "${TEST_BINS[@]}"; do
        echo "     Running $(basename "$bin")" >>"$log"
        env "$@" "$bin" >>"$log" 2>&1 || status=1
    done
    return "$status"
}

banner "tests, on SQLite and on PostgreSQL at once (each test that opens a store gets a database of its own on the local server)"
TEST_LOG=$(mktemp)
PG_TEST_LOG=$(mktemp)
RUNBOOK_TEST_LOG=$(mktemp)
trap 'rm -f "$TEST_LOG" "$PG_TEST_LOG" "$RUNBOOK_TEST_LOG"' EXIT
TESTS_STARTED=$SECONDS
# The doc tests do not open a store: once, with the SQLite pass.
(
    status=0
    cargo test --doc "${LOCKED[@]}" >>"$TEST_LOG" 2>&1 || status=1
    run_tests "$TEST_LOG" || status=1
    exit "$status"
) &
SQLITE_PID=$!
run_tests "$PG_TEST_LOG" MEDIC_TEST_STORE=postgres &
PG_PID=$!
set +e
wait "$SQLITE_PID"
TEST_STATUS=$?
wait "$PG_PID"
PG_TEST_STATUS=$?
set -e
echo "both passes took $((SECONDS - TESTS_STARTED))s"

banner "tests on SQLite"
cat "$TEST_LOG"
banner "tests on PostgreSQL (MEDIC_TEST_STORE=postgres)"
cat "$PG_TEST_LOG"
# Which tests failed, by store, for the summary.
FAILED_TESTS=$(
    { sed -n 's/^test \(.*\) \.\.\. FAILED$/  sqlite:     \1/p' "$TEST_LOG"
      sed -n 's/^test \(.*\) \.\.\. FAILED$/  postgresql: \1/p' "$PG_TEST_LOG"; } | sort -u
)
cat "$PG_TEST_LOG" >>"$TEST_LOG"

# The shipped runbooks' own tests (runbooks/tests/*.toml), run offline by medic itself.
banner "medic test runbooks/tests"
set +e
# The binary built above: no third build just to run it.
"${CARGO_TARGET_DIR:-target}"/debug/medic test runbooks/tests 2>&1 | tee "$RUNBOOK_TEST_LOG"
RUNBOOK_TEST_STATUS=${PIPESTATUS[0]}
set -e
read -r RUNBOOK_PASSED RUNBOOK_FAILED < <(
    awk '/^[0-9]+ passed, [0-9]+ failed$/ { p = $1; f = $3 }
         END { printf "%d %d\n", p, f }' "$RUNBOOK_TEST_LOG"
)

# The shipped Prometheus alerting rules: valid, and their unit tests pass.
banner "promtool check rules, promtool test rules (packaging/prometheus)"
RULES_STATUS=0
# One chain: inside `( ... ) ||` a failing command would not stop the subshell.
(
    cd packaging/prometheus &&
        quiet "$PROMTOOL" check rules medic-rules.yml &&
        quiet "$PROMTOOL" test rules medic-rules.test.yml
) || RULES_STATUS=1
if [ "$RULES_STATUS" -eq 0 ]; then echo "ok"; fi

# Add up the "test result:" lines of every test binary and doctest run.
read -r PASSED FAILED IGNORED < <(
    awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i + 1) ~ /^passed;?$/)  p += $i
                if ($(i + 1) ~ /^failed;?$/)  f += $i
                if ($(i + 1) ~ /^ignored;?$/) g += $i
            }
         }
         END { printf "%d %d %d\n", p, f, g }' "$TEST_LOG"
)

banner "summary"
if [ -n "$FAILED_TESTS" ]; then
    echo "failed tests:"
    echo "$FAILED_TESTS"
fi
if [ "$TEST_STATUS" -ne 0 ]; then
    echo "tests on SQLite failed"
fi
if [ "$PG_TEST_STATUS" -ne 0 ]; then
    echo "tests on PostgreSQL failed"
    if [ "$TEST_STATUS" -eq 0 ]; then TEST_STATUS=$PG_TEST_STATUS; fi
fi
if [ "$PACKAGING_STATUS" -ne 0 ]; then
    echo "packaging checks failed (see \"packaging\" above)"
    if [ "$TEST_STATUS" -eq 0 ]; then TEST_STATUS=$PACKAGING_STATUS; fi
fi
if [ "$RUNBOOK_TEST_STATUS" -ne 0 ]; then
    echo "medic test failed (exit $RUNBOOK_TEST_STATUS)"
    # A run that stopped before its counts line still counts as a failure.
    if [ "$RUNBOOK_FAILED" -eq 0 ]; then RUNBOOK_FAILED=1; fi
fi
if [ "$RULES_STATUS" -ne 0 ]; then
    echo "promtool failed on packaging/prometheus"
fi
echo "took $((SECONDS - START_TIME))s"
echo "runbook tests: $RUNBOOK_PASSED passed, $RUNBOOK_FAILED failed"
echo "packaging checks: $PACKAGING_PASSED passed, $PACKAGING_FAILED failed"
PASSED=$((PASSED + RUNBOOK_PASSED + PACKAGING_PASSED))
FAILED=$((FAILED + RUNBOOK_FAILED + PACKAGING_FAILED))
echo "tests: $PASSED passed, $FAILED failed, $IGNORED skipped"
if [ "$TEST_STATUS" -ne 0 ]; then
    exit "$TEST_STATUS"
fi
if [ "$RULES_STATUS" -ne 0 ]; then
    exit "$RULES_STATUS"
fi
exit "$RUNBOOK_TEST_STATUS"
