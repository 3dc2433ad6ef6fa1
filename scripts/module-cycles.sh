#!/usr/bin/env bash
# Prints every dependency cycle between medic's top-level modules, or nothing when there
# is none (exit 0 either way; tests/architecture.rs fails on any output).
#
# A module is a file or directory directly under src/ (main.rs and lib.rs excluded); an
# edge A -> B is any `crate::B` path used in A's files, tests and comments included, also
# inside a grouped import (`use crate::{b, c::D}`). Modules that can reach each other form
# one cycle (a strongly connected component): each is printed once, on one line, as a
# shortest loop through its first module by name, e.g. "cycle: api -> server -> api",
# followed by all of the component's modules when the loop does not go through them all.
set -euo pipefail
cd "$(dirname "$0")/../src"

for entry in *; do
    module=${entry%.rs}
    case $module in main | lib) continue ;; esac
    if [ -d "$entry" ]; then files=$(find "$entry" -name '*.rs' | sort); else files=$entry; fi
    # shellcheck disable=SC2086
    perl -0777 -ne '
        # crate::name, and each name at the top of a group: crate::{a, b::C, c::{D, E}}
        while (/crate::(\{|[a-z_][a-z0-9_]*)/g) {
            if ($1 ne "{") { print "$1\n"; next }
            my ($depth, $want, $pos) = (1, 1, pos);
            while ($depth > 0 && $pos < length) {
                my $rest = substr($_, $pos);
                if ($depth == 1 && $want && $rest =~ /^\s*([a-z_][a-z0-9_]*)/) {
                    print "$1\n"; $want = 0; $pos += length($&); next;
                }
                my $c = substr($_, $pos++, 1);
                if ($c eq "{") { $depth++ } elsif ($c eq "}") { $depth-- }
                elsif ($c eq "," && $depth == 1) { $want = 1 }
            }
        }' $files |
        sort -u | awk -v from="$module" '$0 != from && $0 != "self" { print from, $0 }'
done | sort -u | awk '
    { node[$1] = 1; node[$2] = 1; edge[$1, $2] = 1 }
    END {
        n = 0
        for (v in node) names[++n] = v
        # Sort the names (insertion sort: there are a few dozen).
        for (i = 2; i <= n; i++) {
            x = names[i]
            for (j = i - 1; j >= 1 && names[j] > x; j--) names[j + 1] = names[j]
            names[j + 1] = x
        }
        # Reachability (Floyd-Warshall on a few dozen modules).
        for (i = 1; i <= n; i++) for (j = 1; j <= n; j++)
            reach[i, j] = ((names[i], names[j]) in edge)
        for (k = 1; k <= n; k++) for (i = 1; i <= n; i++) if (reach[i, k])
            for (j = 1; j <= n; j++) if (reach[k, j]) reach[i, j] = 1
        for (i = 1; i <= n; i++) {
            if (done[i] || !reach[i, i]) continue
            # The component of names[i]: what it reaches and what reaches it.
            for (j = 1; j <= n; j++) in_scc[j] = (j == i) || (reach[i, j] && reach[j, i])
            for (j = 1; j <= n; j++) if (in_scc[j]) done[j] = 1
            # A shortest loop from names[i] back to itself, inside the component (BFS).
            delete prev; delete seen
            head = 1; tail = 0; found = 0
            for (j = 1; j <= n; j++) if (in_scc[j] && ((names[i], names[j]) in edge)) {
                if (j == i) { found = 1; break }
                if (!seen[j]) { seen[j] = 1; prev[j] = i; queue[++tail] = j }
            }
            while (!found && head <= tail) {
                u = queue[head++]
                if ((names[u], names[i]) in edge) { last = u; found = 2; break }
                for (j = 1; j <= n; j++) if (in_scc[j] && !seen[j] && ((names[u], names[j]) in edge)) {
                    seen[j] = 1; prev[j] = u; queue[++tail] = j
                }
            }
            path = names[i]
            if (found == 2) {
                for (u = last; u != i; u = prev[u]) path = names[u] " -> " path
                path = names[i] " -> " path
            } else {
                path = names[i] " -> " names[i]
            }
            members = ""; size = 0
            for (j = 1; j <= n; j++) if (in_scc[j]) { members = members (size++ ? ", " : "") names[j] }
            loop = split(path, hops, " -> ") - 1
            print "cycle: " path (size > loop ? " (all of: " members ")" : "")
        }
    }'
