//! The rules of ARCHITECTURE.md that a script can check.

use std::process::Command;

/// No dependency cycle between top-level modules: `scripts/module-cycles.sh` finds every
/// strongly connected component of `crate::` paths under `src/` and prints it.
#[test]
fn top_level_modules_have_no_dependency_cycle() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/module-cycles.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run scripts/module-cycles.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "module-cycles.sh failed: {stderr}");
    let cycles = String::from_utf8_lossy(&out.stdout);
    assert!(
        cycles.trim().is_empty(),
        "modules depend on each other in a cycle (break it: see ARCHITECTURE.md):\n{cycles}"
    );
}
