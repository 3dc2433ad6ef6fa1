//! `[ui]`: the on-call console's users, their roles, and checking their passwords.
//!
//! Owns the argon2id password hashes of `[[ui.users]]`: making one (`medic hash-password`),
//! checking that a configured one is a usable argon2 PHC string, and verifying a password
//! against it. Nothing here knows about HTTP or sessions.

use std::fmt;
use std::sync::LazyLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

use super::Redacted;

/// `[ui]`: the on-call console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UiConfig {
    /// `[[ui.users]]`, in file order; names are unique. Empty: nobody can log in.
    pub users: Vec<UiUser>,
    /// `proxy_header`, `proxy_addresses` and `proxy_role`: login through a trusted proxy.
    pub proxy: Option<UiProxy>,
}

/// A trusted authenticating proxy in front of the console: a request from one of its
/// addresses carrying its header is logged in as the name the header holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiProxy {
    /// The header naming the user (`X-Forwarded-User`), lowercase.
    pub header: String,
    /// The addresses the proxy connects from.
    pub addresses: Vec<Cidr>,
    /// The role of a proxy user who is not in `[[ui.users]]`.
    pub role: Role,
}

impl UiProxy {
    /// Whether a request from `ip` may name its user in the header.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.addresses.iter().any(|c| c.contains(ip))
    }
}

/// An address block: `127.0.0.1/32`, `10.0.0.0/8`, `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address/prefix`; the address must be the block's first (no host bits set).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text.split_once('/').ok_or_else(|| {
            format!("{text:?} is not a CIDR block (write it as address/prefix, like 127.0.0.1/32)")
        })?;
        let network: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length from 0 to {max}"))?;
        let cidr = Cidr { network, prefix };
        if !cidr.contains(network) || cidr.masked(network) != Some(bits(network)) {
            return Err(format!("{text:?} has host bits set after /{prefix}"));
        }
        Ok(cidr)
    }

    fn masked(&self, ip: std::net::IpAddr) -> Option<u128> {
        let (width, value) = match (self.network, ip) {
            (std::net::IpAddr::V4(_), std::net::IpAddr::V4(_)) => (32, bits(ip)),
            (std::net::IpAddr::V6(_), std::net::IpAddr::V6(_)) => (128, bits(ip)),
            _ => return None,
        };
        let shift = width - u32::from(self.prefix);
        Some(if shift >= 128 {
            0
        } else {
            (value >> shift) << shift
        })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let (Some(a), Some(b)) = (self.masked(ip), self.masked(self.network)) else {
            return false;
        };
        a == b
    }
}

fn bits(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(v4) => u128::from(u32::from(v4)),
        std::net::IpAddr::V6(v6) => u128::from(v6),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl UiConfig {
    /// The user named `name`.
    pub fn user(&self, name: &str) -> Option<&UiUser> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The user named `name`, if `password` is theirs. The comparison is constant-time,
    /// and an unknown name costs as much as a wrong password (a hash is verified either
    /// way), so the answer's timing does not tell which names exist.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<&UiUser> {
        match self.user(name) {
            Some(user) => verify_password(&user.password_hash, password).then_some(user),
            None => {
                let _ = verify_password(&DECOY_HASH, password);
                None
            }
        }
    }
}

/// One `[[ui.users]]` entry. `Debug` hides the password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct UiUser {
    /// The login name; not empty, unique.
    pub name: String,
    /// An argon2 PHC string (`$argon2id$v=19$...`), checked when the config loads.
    pub password_hash: String,
    /// What the user may do.
    pub role: Role,
}

impl fmt::Debug for UiUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UiUser")
            .field("name", &self.name)
            .field("password_hash", &Redacted)
            .field("role", &self.role)
            .finish()
    }
}

/// What a console user may do. Ordered: each role may do everything the roles before
/// it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `"viewer"`: reads incidents and reports.
    Viewer,
    /// `"responder"`: also acknowledges incidents and decides on approvals.
    Responder,
    /// `"admin"`: everything.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Responder, Role::Admin];

    /// Whether this role may do what `needed` may.
    pub fn may(self, needed: Role) -> bool {
        self >= needed
    }

    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }

    /// The role named `name` in the config.
    pub fn parse(name: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or_else(|| format!("unknown role {name:?} (use viewer, responder or admin)"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a password could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The password is empty.
    #[error("the password is empty")]
    Empty,
    /// The hasher failed (no randomness for the salt, for instance).
    #[error("cannot hash the password: {0}")]
    Hasher(String),
}

/// `password`'s argon2id hash as a PHC string, with a random salt and the `argon2`
/// crate's default parameters: what `password_hash` in `[[ui.users]]` takes.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    if password.is_empty() {
        return Err(HashError::Empty);
    }
    let salt = argon2::password_hash::try_generate_salt()
        .map_err(|e| HashError::Hasher(format!("no random salt: {e}")))?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Hasher(e.to_string()))
}

/// Whether `password` is the one `hash` (an argon2 PHC string) was made from; compared
/// in constant time. A hash that is not a valid argon2 PHC string matches no password.
pub fn verify_password(hash: &str, password: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Checks that `hash` is an argon2 PHC string that [`verify_password`] can use: the
/// algorithm, version and parameters argon2 knows, with a salt and a hash.
pub(crate) fn check_password_hash(hash: &str) -> Result<(), String> {
    const HINT: &str = "make one with `medic hash-password`";
    let parsed = PasswordHash::new(hash)
        .map_err(|e| format!("invalid password hash: not a PHC string ({e}); {HINT}"))?;
    let algorithm = parsed.algorithm.as_str();
    if Algorithm::try_from(algorithm).is_err() {
        return Err(format!(
            "invalid password hash: algorithm {algorithm:?} is not argon2 (use argon2id); {HINT}"
        ));
    }
    if let Some(version) = parsed.version {
        Version::try_from(version).map_err(|_| {
            format!("invalid password hash: unknown argon2 version {version}; {HINT}")
        })?;
    }
    Params::try_from(&parsed)
        .map_err(|e| format!("invalid password hash: invalid argon2 parameters ({e}); {HINT}"))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(format!(
            "invalid password hash: the salt or the hash is missing; {HINT}"
        ));
    }
    Ok(())
}

/// A hash of no user's password, with the default parameters, verified for unknown
/// names so that they take as long as known ones. Its salt is fixed: it protects nothing.
static DECOY_HASH: LazyLock<String> = LazyLock::new(|| {
    Argon2::default()
        .hash_password_with_salt(b"medic: no such user", b"medic-decoy-salt")
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

#[cfg(test)]
mod tests {
    use super::*;

    fn users(hash: &str) -> UiConfig {
        UiConfig {
            users: vec![UiUser {
                name: "alice".to_owned(),
                password_hash: hash.to_owned(),
                role: Role::Responder,
            }],
            proxy: None,
        }
    }

    #[test]
    fn the_right_password_is_accepted() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert_eq!(check_password_hash(&hash), Ok(()));
        let ui = users(&hash);
        assert_eq!(
            ui.authenticate("alice", "correct horse").map(|u| u.role),
            Some(Role::Responder)
        );
    }

    #[test]
    fn a_wrong_password_is_refused() {
        let ui = users(&hash_password("correct horse").unwrap());
        assert_eq!(ui.authenticate("alice", "battery staple"), None);
        assert_eq!(ui.authenticate("alice", ""), None);
        assert_eq!(ui.authenticate("alice", "correct horse "), None);
    }

    #[test]
    fn an_unknown_user_is_refused() {
        let ui = users(&hash_password("correct horse").unwrap());
        assert_eq!(ui.authenticate("bob", "correct horse"), None);
        assert_eq!(ui.authenticate("", "correct horse"), None);
        assert_eq!(UiConfig::default().authenticate("alice", "x"), None);
        // The decoy that unknown names are checked against is a real argon2id hash.
        assert_eq!(check_password_hash(&DECOY_HASH), Ok(()));
    }

    #[test]
    fn each_hash_has_its_own_salt() {
        let (a, b) = (hash_password("pw").unwrap(), hash_password("pw").unwrap());
        assert_ne!(a, b);
        assert!(verify_password(&a, "pw") && verify_password(&b, "pw"));
    }

    #[test]
    fn an_empty_password_is_not_hashed() {
        assert_eq!(hash_password(""), Err(HashError::Empty));
    }

    #[test]
    fn a_broken_hash_matches_nothing() {
        assert!(!verify_password("", ""));
        assert!(!verify_password("$argon2id$v=19$m=19456,t=2,p=1$", "x"));
    }

    #[test]
    fn cidr_blocks_contain_their_addresses() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let one = Cidr::parse("127.0.0.1/32").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!(one.contains(ip("::ffff:127.0.0.1")));
        let ten = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(ten.contains(ip("10.200.1.2")) && !ten.contains(ip("11.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
        for bad in ["127.0.0.1", "10.0.0.1/8", "10.0.0.0/33", "x/8", "10.0.0.0/"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_are_ordered() {
        use Role::*;
        assert!(Admin.may(Responder) && Admin.may(Viewer) && Admin.may(Admin));
        assert!(Responder.may(Viewer) && Responder.may(Responder) && !Responder.may(Admin));
        assert!(Viewer.may(Viewer) && !Viewer.may(Responder) && !Viewer.may(Admin));
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("Admin").is_err());
    }

    #[test]
    fn hashes_are_not_in_debug_output() {
        let hash = hash_password("pw").unwrap();
        let debug = format!("{:?}", users(&hash));
        assert!(
            !debug.contains(&hash) && !debug.contains("argon2"),
            "{debug}"
        );
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
