#!/usr/bin/env bash
# Checks what ships beside the binary, with the binary given:
#
#   scripts/check-packaging.sh target/debug/medic
#
# - medic man --dir writes medic(1) and a page per subcommand; man finds and renders it;
# - medic completions bash|zsh|fish are non-empty and name every subcommand; the bash
#   one parses (bash -n) and completes a subcommand; zsh and fish parse it too where
#   those shells are installed;
# - the systemd units in packaging/ (medic.service, medic-backup.service and its timer)
#   pass `systemd-analyze verify` with no warning, on copies that run the binary given
#   (verify checks that the program exists).
#
# Needs systemd-analyze (Debian's systemd package). Prints one line per check; on a
# failure, what failed and the tool's output. Ends with "packaging: N passed, N failed";
# exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${1:?usage: $0 MEDIC_BINARY}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
[ -x "$BIN" ] || { echo "no executable medic at $BIN" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/medic-packaging.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PASSED=0
FAILED=0

ok() {
    printf '  ok    %s\n' "$*"
    PASSED=$((PASSED + 1))
}
fail() {
    printf '  FAIL  %s\n' "$1"
    shift
    if [ "$#" -gt 0 ]; then printf '%s\n' "$@" | sed 's/^/        /'; fi
    FAILED=$((FAILED + 1))
}

# The subcommands, as `medic --help` lists them (help excepted).
mapfile -t SUBCOMMANDS < <("$BIN" --help | awk '
    /^Commands:/ { on = 1; next }
    on && /^  [a-z]/ { if ($1 != "help") print $1; next }
    on && !/^ / { on = 0 }')
if [ "${#SUBCOMMANDS[@]}" -lt 5 ]; then
    fail "medic --help lists its subcommands" "found: ${SUBCOMMANDS[*]:-none}"
fi

# names_every_subcommand WHAT FILE (roff's \- is read as -)
names_every_subcommand() {
    local missing=() text
    text=$(sed 's/\\-/-/g' "$2")
    for sub in "${SUBCOMMANDS[@]}"; do
        grep -q -- "$sub" <<<"$text" || missing+=("$sub")
    done
    if [ ! -s "$2" ]; then
        fail "$1 is empty"
    elif [ "${#missing[@]}" -gt 0 ]; then
        fail "$1 names every subcommand" "missing: ${missing[*]}"
    else
        ok "$1: $(wc -c <"$2") bytes, names ${#SUBCOMMANDS[@]} subcommands"
    fi
}

# --- man page ------------------------------------------------------------------
MAN=$WORK/man/man1
mkdir -p "$MAN"
if out=$("$BIN" man --dir "$MAN" 2>&1); then
    names_every_subcommand "man page medic(1)" "$MAN/medic.1"
    for sub in "${SUBCOMMANDS[@]}"; do
        [ -s "$MAN/medic-$sub.1" ] || fail "medic man --dir writes medic-$sub.1"
    done
    if command -v man >/dev/null; then
        if rendered=$(MANPATH=$WORK/man MANWIDTH=80 man --warnings medic 2>&1 >"$WORK/medic.txt") &&
            [ -z "$rendered" ] && grep -q SUBCOMMANDS "$WORK/medic.txt"; then
            ok "man medic renders without a warning"
        else
            fail "man medic renders without a warning" "$rendered"
        fi
    fi
else
    fail "medic man --dir" "$out"
fi

# --- completions ---------------------------------------------------------------
for shell in bash zsh fish; do
    file=$WORK/medic.$shell
    if ! out=$("$BIN" completions "$shell" 2>&1 >"$file"); then
        fail "medic completions $shell" "$out"
        continue
    fi
    names_every_subcommand "completions $shell" "$file"
    if [ "$shell" = bash ] || command -v "$shell" >/dev/null; then
        if out=$("$shell" -n "$file" 2>&1); then
            ok "$shell -n accepts the $shell completions"
        else
            fail "$shell -n accepts the $shell completions" "$out"
        fi
    fi
done
# The bash completion completes: `medic mig<TAB>` offers migrate.
completed=$(bash -c '
    source "$1"
    COMP_WORDS=(medic mig); COMP_CWORD=1; COMP_LINE="medic mig"; COMP_POINT=${#COMP_LINE}
    _medic medic mig medic
    printf "%s\n" "${COMPREPLY[@]}"' _ "$WORK/medic.bash" 2>&1 || true)
if [ "$completed" = migrate ]; then
    ok "bash completes \"medic mig\" to migrate"
else
    fail "bash completes \"medic mig\" to migrate" "offered: ${completed:-nothing}"
fi

# --- systemd units -------------------------------------------------------------
UNITS=()
for unit in packaging/*.service packaging/*.timer; do
    sed "s#/usr/local/bin/medic #$BIN #g" "$unit" >"$WORK/$(basename "$unit")"
    UNITS+=("$WORK/$(basename "$unit")")
done
grep -q "^ExecStart=$BIN serve " "$WORK/medic.service" ||
    fail "packaging/medic.service starts /usr/local/bin/medic serve"
if ! command -v systemd-analyze >/dev/null; then
    fail "systemd-analyze is installed (Debian package systemd)"
# Any output is a problem: verify exits 0 after a mere warning (an unknown key).
# MANPATH: it also checks that Documentation=man:medic(1) exists.
elif out=$(cd "$WORK" && MANPATH=$WORK/man systemd-analyze verify "${UNITS[@]}" 2>&1) &&
    [ -z "$out" ]; then
    ok "systemd-analyze verify packaging/: $(cd packaging && echo *.service *.timer)"
else
    fail "systemd-analyze verify packaging/" "$out"
fi

echo "packaging: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
