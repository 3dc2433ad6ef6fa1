//! A route's `approval = { timeout = "15m", approvers = [...] }`: the route asks a person
//! before each run. The timeout is a positive duration (15 minutes when left out); an
//! approver is a console user name or a role that may act (`responder`, `admin`). A route
//! is in one mode: `ignore`, `dry_run` (shadow) and `approval` exclude each other.

use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::raw::{RawApproval, RawConfig, RawRoute};
use crate::config::units::parse_duration;
use crate::config::{ApprovalConfig, Config, Role};

/// The approval timeout when the route does not set one.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl Validator<'_> {
    /// A route's `approval`, checked against the rest of the route.
    pub(super) fn approval(
        &mut self,
        key: &str,
        spanned: &Spanned<RawApproval>,
        route: &RawRoute,
    ) -> Option<ApprovalConfig> {
        let raw = spanned.get_ref();
        if route.ignore.as_ref().is_some_and(|i| *i.get_ref()) {
            self.error(
                key,
                spanned.span(),
                "not allowed with ignore = true (an ignored alert runs nothing, so there is nothing to approve)",
            );
        }
        if route.dry_run {
            self.error(
                key,
                spanned.span(),
                "not allowed with dry_run = true: a route is in shadow mode (dry_run) or asks for approval, not both",
            );
        }
        let timeout = self.optional(
            &format!("{key}.timeout"),
            raw.timeout.as_ref(),
            DEFAULT_APPROVAL_TIMEOUT,
            parse_duration,
        );
        let approvers = self.list(&format!("{key}.approvers"), &raw.approvers, |name| {
            match (name.trim(), Role::parse(name)) {
                ("", _) => Err("must not be empty".to_owned()),
                (_, Ok(Role::Viewer)) => Err(
                    "\"viewer\" may not decide: name users, or the role responder or admin"
                        .to_owned(),
                ),
                _ => Ok(name.to_owned()),
            }
        });
        Some(ApprovalConfig { timeout, approvers })
    }

    /// Warns about an approver that is neither a role nor a `[[ui.users]]` name, when no
    /// trusted proxy can log in other names: nobody could decide as that name.
    pub(super) fn approvers_known(&mut self, raw: &RawConfig, config: &Config) {
        if config.ui.proxy.is_some() {
            return;
        }
        for (index, route) in raw.routes.iter().enumerate() {
            let Some(approval) = &route.get_ref().approval else {
                continue;
            };
            for (i, name) in approval.get_ref().approvers.iter().enumerate() {
                let text = name.get_ref();
                if Role::parse(text).is_ok() || config.ui.user(text).is_some() {
                    continue;
                }
                self.warning(
                    &format!("routes[{index}].approval.approvers[{i}]"),
                    name.span(),
                    format!("{text:?} is no [[ui.users]] name and no role: nobody can decide as it in the console (the API and Slack take the name as given)"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, Role};

    const BASE: &str = r#"
[runbooks]
dir = "runbooks"

[escalation]
notify = ["f"]

[[escalation.channels]]
name = "f"
type = "file"
path = "x.jsonl"

[[ui.users]]
name = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$ekXV1QgHAj1v9OT0MliIxw$mT49nieAymqOtZQpL0A6p4D2qJTNcaZaJfvmtbvBjsY"
role = "responder"
"#;

    fn load(route: &str) -> Result<Config, Vec<String>> {
        let text =
            format!("{BASE}\n[[routes]]\nname = \"db\"\nmatchers = ['alertname=\"X\"']\n{route}\n");
        Config::parse(Path::new("medic.toml"), &text, &|_| None)
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn an_approval_route_has_a_timeout_and_approvers() {
        let c = load("runbook = \"db.rhai\"\napproval = { timeout = \"10m\", approvers = [\"alice\", \"admin\"] }").unwrap();
        let a = c.routes[0].approval.clone().unwrap();
        assert_eq!(a.timeout, std::time::Duration::from_secs(600));
        assert!(a.allows("alice", None));
        assert!(a.allows("carol", Some(Role::Admin)));
        assert!(!a.allows("bob", Some(Role::Responder)));
        assert!(!a.allows("bob", None));
        let d = load("runbook = \"db.rhai\"\napproval = {}").unwrap();
        let d = d.routes[0].approval.clone().unwrap();
        assert_eq!(d.timeout, super::DEFAULT_APPROVAL_TIMEOUT);
        assert!(d.allows("anyone", None), "no approvers: anyone who may act");
        assert!(load("runbook = \"db.rhai\"").unwrap().routes[0]
            .approval
            .is_none());
    }

    #[test]
    fn a_role_approver_admits_that_role_and_higher() {
        let c = load("runbook = \"db.rhai\"\napproval = { approvers = [\"responder\"] }").unwrap();
        let a = c.routes[0].approval.clone().unwrap();
        assert!(a.allows("x", Some(Role::Responder)));
        assert!(a.allows("x", Some(Role::Admin)));
        assert!(!a.allows("x", Some(Role::Viewer)));
    }

    #[test]
    fn each_bad_approval_is_named() {
        let cases = [
            (
                "runbook = \"db.rhai\"\napproval = { timeout = \"0s\" }",
                "routes[0].approval.timeout: invalid duration \"0s\": must be greater than zero",
            ),
            (
                "runbook = \"db.rhai\"\napproval = { timeout = \"soon\" }",
                "routes[0].approval.timeout: invalid duration",
            ),
            (
                "runbook = \"db.rhai\"\napproval = { approvers = [\"viewer\"] }",
                "routes[0].approval.approvers[0]: \"viewer\" may not decide",
            ),
            (
                "runbook = \"db.rhai\"\napproval = { approvers = [\"\"] }",
                "routes[0].approval.approvers[0]: must not be empty",
            ),
            (
                "runbook = \"db.rhai\"\ndry_run = true\napproval = {}",
                "routes[0].approval: not allowed with dry_run = true",
            ),
            (
                "ignore = true\napproval = {}",
                "routes[0].approval: not allowed with ignore = true",
            ),
            (
                "runbook = \"db.rhai\"\napproval = { timout = \"1m\" }",
                "unknown field `timout`",
            ),
        ];
        for (route, expected) in cases {
            let errors = load(route).unwrap_err();
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{route}: expected {expected:?} in {errors:#?}"
            );
        }
    }

    #[test]
    fn an_unknown_approver_is_a_warning() {
        let c = load(
            "runbook = \"db.rhai\"\napproval = { approvers = [\"alice\", \"bob\", \"admin\"] }",
        )
        .unwrap();
        let warnings: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("approvers[1]"), "{warnings:?}");
        assert!(
            warnings[0].contains("\"bob\" is no [[ui.users]] name"),
            "{warnings:?}"
        );
    }
}
