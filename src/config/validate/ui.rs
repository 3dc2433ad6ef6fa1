//! `[ui]`: the console's users, each with a unique name, a usable argon2 hash and a role.

use super::{UniqueNames, Validator};
use crate::config::raw::RawUi;
use crate::config::ui::check_password_hash;
use crate::config::{Role, UiConfig, UiUser};

impl Validator<'_> {
    pub(super) fn ui(&mut self, raw: &RawUi) -> UiConfig {
        let mut names = UniqueNames::default();
        let mut users = Vec::new();
        for (index, spanned) in raw.users.iter().enumerate() {
            let prefix = format!("ui.users[{index}]");
            let user = spanned.get_ref();
            let name = match &user.name {
                Some(name) => self.unique_name(&format!("{prefix}.name"), name, "user", &mut names),
                None => {
                    self.error(&prefix, spanned.span(), "missing required key \"name\"");
                    None
                }
            };
            let password_hash = match &user.password_hash {
                Some(hash) => self.parse(&format!("{prefix}.password_hash"), hash, |hash| {
                    check_password_hash(hash).map(|()| hash.to_owned())
                }),
                None => {
                    self.error(
                        &prefix,
                        spanned.span(),
                        "missing required key \"password_hash\" (make one with `medic hash-password`)",
                    );
                    None
                }
            };
            let role = match &user.role {
                Some(role) => self.parse(&format!("{prefix}.role"), role, Role::parse),
                None => {
                    self.error(
                        &prefix,
                        spanned.span(),
                        "missing required key \"role\" (viewer, responder or admin)",
                    );
                    None
                }
            };
            if let (Some(name), Some(password_hash), Some(role)) = (name, password_hash, role) {
                users.push(UiUser {
                    name,
                    password_hash,
                    role,
                });
            }
        }
        UiConfig { users }
    }
}
