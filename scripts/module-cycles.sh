#!/usr/bin/env bash
# Prints the two-way dependencies between medic's top-level modules.
#
# A module is a file or directory directly under src/ (main.rs and lib.rs excluded); an
# edge A -> B is any `crate::B` path used in A's files, tests included. Each cycle is
# printed once, as "a <-> b", sorted. Prints nothing when there is none.
set -euo pipefail
cd "$(dirname "$0")/../src"

for entry in *; do
    module=${entry%.rs}
    case $module in main | lib) continue ;; esac
    if [ -d "$entry" ]; then files=$(find "$entry" -name '*.rs'); else files=$entry; fi
    # shellcheck disable=SC2086
    { grep -ohE 'crate::[a-z_]+' $files || true; } |
        sed 's/^crate:://' | sort -u |
        awk -v from="$module" '$0 != from { print from, $0 }'
done | awk '
    { edge[$1 " " $2] = 1 }
    END {
        for (e in edge) {
            split(e, p, " ")
            if (p[1] < p[2] && ((p[2] " " p[1]) in edge)) print p[1] " <-> " p[2]
        }
    }' | sort
