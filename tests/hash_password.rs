//! `medic hash-password`: its hash verifies against the password it read, and goes into
//! `[[ui.users]]` as it is; an empty password is refused.

use std::io::Write as _;
use std::process::{Command, Stdio};

use medic::config::{verify_password, Config, Role};

/// Runs `medic hash-password` with `stdin` on its standard input, without a config file
/// in reach; (exit code, stdout, stderr).
fn hash_password(stdin: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
        .arg("hash-password")
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run medic");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("wait for medic");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_hash_verifies_against_the_password_it_was_given() {
    let (code, out, err) = hash_password("correct horse battery\n");
    assert_eq!(code, 0, "{out}{err}");
    let hash = out.trim_end_matches('\n');
    assert!(!hash.contains('\n'), "one line: {out:?}");
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(verify_password(hash, "correct horse battery"));
    // The line's ending is not part of the password.
    assert!(!verify_password(hash, "correct horse battery\n"));
    assert!(!verify_password(hash, "correct horse"));

    // As written into [[ui.users]], it logs the user in.
    let text = format!(
        "[[ui.users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nrole = \"responder\"\n\
         [escalation]\nnotify = [\"log\"]\n[[escalation.channels]]\nname = \"log\"\ntype = \"file\"\npath = \"e.jsonl\"\n"
    );
    let config =
        Config::parse("medic.toml".as_ref(), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let user = config.ui.authenticate("alice", "correct horse battery");
    assert_eq!(user.map(|u| u.role), Some(Role::Responder));
}

#[test]
fn each_hash_has_its_own_salt_and_crlf_is_a_line_ending() {
    let (code, first, err) = hash_password("pw\r\n");
    assert_eq!(code, 0, "{err}");
    let (_, second, _) = hash_password("pw");
    assert_ne!(first, second);
    for hash in [first.trim_end(), second.trim_end()] {
        assert!(verify_password(hash, "pw"), "{hash}");
    }
}

#[test]
fn an_empty_password_is_refused() {
    for stdin in ["\n", "", "\r\n"] {
        let (code, out, err) = hash_password(stdin);
        assert_eq!(code, 1, "{stdin:?}: {out}{err}");
        assert_eq!(out, "", "{stdin:?}: nothing on stdout");
        assert!(err.contains("the password is empty"), "{stdin:?}: {err}");
    }
}
