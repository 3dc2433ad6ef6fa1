//! `[ui]`: the console's users, each with a unique name, a usable argon2 hash and a role.

use super::{UniqueNames, Validator};
use crate::config::raw::RawUi;
use crate::config::ui::check_password_hash;
use crate::config::{Cidr, Role, UiConfig, UiProxy, UiUser};

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
        let proxy = self.ui_proxy(raw);
        UiConfig { users, proxy }
    }

    /// `proxy_header` and `proxy_addresses` (both or neither), and `proxy_role`.
    fn ui_proxy(&mut self, raw: &RawUi) -> Option<UiProxy> {
        let header = raw.proxy_header.as_ref().and_then(|h| {
            self.parse("ui.proxy_header", h, |h| {
                let h = h.trim();
                if h.is_empty() {
                    return Err("the header name is empty".to_owned());
                }
                axum::http::HeaderName::from_bytes(h.as_bytes())
                    .map(|n| n.as_str().to_owned())
                    .map_err(|_| format!("{h:?} is not a header name"))
            })
        });
        let addresses = raw.proxy_addresses.as_ref().map(|list| {
            if list.get_ref().is_empty() {
                self.error(
                    "ui.proxy_addresses",
                    list.span(),
                    "empty: list the proxy's addresses (like \"127.0.0.1/32\")",
                );
            }
            list.get_ref()
                .iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    self.parse(&format!("ui.proxy_addresses[{i}]"), a, Cidr::parse)
                })
                .collect::<Vec<_>>()
        });
        let role = raw
            .proxy_role
            .as_ref()
            .map(|r| self.parse("ui.proxy_role", r, Role::parse));
        match (&raw.proxy_header, &raw.proxy_addresses) {
            (Some(h), None) => {
                self.error(
                    "ui.proxy_header",
                    h.span(),
                    "proxy_header needs proxy_addresses (the addresses the proxy connects from)",
                );
                return None;
            }
            (None, Some(a)) => {
                self.error(
                    "ui.proxy_addresses",
                    a.span(),
                    "proxy_addresses needs proxy_header (the header naming the user)",
                );
                return None;
            }
            (None, None) => {
                if let Some(r) = &raw.proxy_role {
                    self.error(
                        "ui.proxy_role",
                        r.span(),
                        "proxy_role needs proxy_header and proxy_addresses",
                    );
                }
                return None;
            }
            (Some(_), Some(_)) => {}
        }
        let role = match role {
            Some(Some(role)) => role,
            Some(None) => return None,
            None => Role::Viewer,
        };
        let (Some(header), Some(addresses)) = (header, addresses) else {
            return None;
        };
        (!addresses.is_empty()).then_some(UiProxy {
            header,
            addresses,
            role,
        })
    }
}
