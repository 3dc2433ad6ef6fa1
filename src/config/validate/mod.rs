//! Phase 2: from the raw file (`raw`) to the typed [`Config`].
//!
//! Every string is `${ENV}`-expanded first, then parsed and checked. Each
//! problem is recorded with its position and dotted key, and validation goes
//! on, so that one run reports every problem in the file; they are sorted
//! into file order at the end. A value that is wrong is replaced by its
//! default (or left out) so that the checks after it can still run; the
//! resulting `Config` is only returned when nothing was wrong.

mod approval;
mod escalation;
mod routes;
mod sections;
mod ui;

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::expand::{expand, ExpandError};
use super::raw::{Integer, RawConfig, RawSize, Text};
use super::units::{parse_size, size_from_bytes};
use super::{redact_url_password, Config, ConfigError, ConfigErrors, Location, DEFAULT_BODY_LIMIT};
use super::{Purpose, Tier};

/// Validates `raw`, parsed from `text`, the contents of `source`.
pub(crate) fn validate(
    source: &Path,
    text: &str,
    raw: &RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    purpose: Purpose,
) -> Result<Config, ConfigErrors> {
    let mut validator = Validator {
        source,
        text,
        env,
        purpose,
        errors: Vec::new(),
        warnings: Vec::new(),
        channel_names: UniqueNames::default(),
        has_alertmanager: raw.alertmanager.as_ref().is_some_and(|a| a.url.is_some()),
        default_tiers: Vec::new(),
    };
    // Channels first: routes' tiers name them.
    let escalation = validator.escalation(&raw.escalation);
    let mut config = Config {
        source: source.to_path_buf(),
        server: validator.server(&raw.server),
        store: validator.store(&raw.store),
        runbooks: validator.runbooks(&raw.runbooks),
        limits: validator.limits(&raw.limits),
        routes: validator.routes(&raw.routes),
        escalation,
        alertmanager: raw
            .alertmanager
            .as_ref()
            .and_then(|s| validator.service("alertmanager", s)),
        prometheus: raw
            .prometheus
            .as_ref()
            .and_then(|s| validator.service("prometheus", s)),
        ui: validator.ui(&raw.ui),
        warnings: Vec::new(),
    };
    validator.everyone_reaches_someone(raw, &config);
    validator.approvers_known(raw, &config);
    config.warnings = validator.warnings;
    let mut errors = validator.errors;
    if errors.is_empty() {
        Ok(config)
    } else {
        // Stable: errors at the same place keep the order they were found in.
        errors.sort_by_key(|error| error.location);
        Err(ConfigErrors(errors))
    }
}

/// Walks the raw configuration, collecting errors.
struct Validator<'a> {
    source: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// What the config is for: which unset secrets are fine.
    purpose: Purpose,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    /// Every named escalation channel (known once `escalation` ran).
    channel_names: UniqueNames,
    /// Whether `[alertmanager] url` is set (for `verify = "alertmanager"`).
    has_alertmanager: bool,
    /// The default policy's tiers (known once `escalation` ran).
    default_tiers: Vec<Tier>,
}

impl Validator<'_> {
    // ----- helpers the sections share -----

    /// A route's or channel's name: not empty, and not used before.
    fn unique_name(
        &mut self,
        key: &str,
        name: &Text,
        what: &str,
        names: &mut UniqueNames,
    ) -> Option<String> {
        let checked = self.parse(key, name, |name| match name {
            "" => Err("must not be empty".to_owned()),
            _ => Ok(name.to_owned()),
        })?;
        let location = self.location(&name.span());
        if let Some(first) = names.first_use(&checked, location) {
            self.error(
                key,
                name.span(),
                format!(
                    "duplicate {what} name {checked:?} (first used on line {})",
                    first.line
                ),
            );
        }
        Some(checked)
    }

    fn optional_size(
        &mut self,
        key: &str,
        value: Option<&Spanned<RawSize>>,
        default: usize,
    ) -> usize {
        match value {
            Some(v) => self.size(key, v),
            None => default,
        }
    }

    fn optional_positive<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        value: Option<&Spanned<Integer>>,
        default: T,
    ) -> T {
        value.and_then(|v| self.positive(key, v)).unwrap_or(default)
    }

    // ----- values -----

    /// A secret: `None` when absent or empty after expansion.
    fn token(&mut self, key: &str, value: Option<&Text>) -> Option<String> {
        let token = self.string(key, value?)?;
        (!token.is_empty()).then_some(token)
    }

    fn size(&mut self, key: &str, value: &Spanned<RawSize>) -> usize {
        let checked = match value.get_ref() {
            RawSize::Bytes(bytes) => size_from_bytes(*bytes),
            RawSize::Text(text) => match self.expand(key, value.span(), text) {
                Some(text) => parse_size(&text),
                None => return DEFAULT_BODY_LIMIT,
            },
        };
        checked.unwrap_or_else(|message| {
            self.error(key, value.span(), message);
            DEFAULT_BODY_LIMIT
        })
    }

    /// An integer of at least 1 that fits `T`.
    fn positive<T: TryFrom<i64>>(&mut self, key: &str, value: &Spanned<Integer>) -> Option<T> {
        let Integer(number) = *value.get_ref();
        let checked = if number < 1 {
            Err(format!("must be at least 1, not {number}"))
        } else {
            T::try_from(number).map_err(|_| format!("{number} is too large"))
        };
        checked
            .map_err(|message| self.error(key, value.span(), message))
            .ok()
    }

    /// `value` expanded and converted with `parse`, or `default` when it is
    /// absent or wrong.
    fn optional<T>(
        &mut self,
        key: &str,
        value: Option<&Text>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        value
            .and_then(|value| self.parse(key, value, parse))
            .unwrap_or(default)
    }

    /// Each element of an array, expanded and converted with `parse`; the
    /// wrong ones are reported (as `key[index]`) and left out.
    fn list<T>(
        &mut self,
        key: &str,
        values: &[Text],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        values
            .iter()
            .enumerate()
            .filter_map(|(index, value)| self.parse(&format!("{key}[{index}]"), value, &parse))
            .collect()
    }

    /// `value` expanded and converted with `parse`.
    fn parse<T>(
        &mut self,
        key: &str,
        value: &Text,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let expanded = self.string(key, value)?;
        parse(&expanded)
            .map_err(|message| self.error(key, value.span(), message))
            .ok()
    }

    /// `value` expanded.
    fn string(&mut self, key: &str, value: &Text) -> Option<String> {
        self.expand(key, value.span(), value.get_ref())
    }

    /// `text`, found at `span`, expanded.
    fn expand(&mut self, key: &str, span: Range<usize>, text: &str) -> Option<String> {
        match expand(text, self.env) {
            Ok(expanded) => Some(expanded),
            // A secret this purpose does not use: left out, without complaint.
            Err(ExpandError::Unset(_)) if self.purpose.may_leave_unset(key) => None,
            Err(error) => {
                self.error(key, span, error.to_string());
                None
            }
        }
    }

    // ----- reporting -----

    fn location(&self, span: &Range<usize>) -> Location {
        Location::from_offset(self.text, span.start)
    }

    fn error(&mut self, key: &str, span: Range<usize>, message: impl Into<String>) {
        let location = self.location(&span);
        self.error_at(key, Some(location), message);
    }

    fn error_at(&mut self, key: &str, location: Option<Location>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.source.to_path_buf(),
            location,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn warning(&mut self, key: &str, span: Range<usize>, message: impl Into<String>) {
        let location = self.location(&span);
        self.warnings.push(ConfigError {
            file: self.source.to_path_buf(),
            location: Some(location),
            key: key.to_owned(),
            message: message.into(),
        });
    }
}

/// The names seen so far, and where each was first used.
#[derive(Default)]
struct UniqueNames(HashMap<String, Location>);

impl UniqueNames {
    /// Records `name` as used at `location`, unless it was used before:
    /// then gives where it was first used.
    fn first_use(&mut self, name: &str, location: Location) -> Option<Location> {
        match self.0.get(name) {
            Some(first) => Some(*first),
            None => {
                self.0.insert(name.to_owned(), location);
                None
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

// ----- checks of single values -----

fn check_http_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() => Ok(url.to_owned()),
        _ => Err(format!(
            "invalid URL {:?}: expected an http:// or https:// URL",
            redact_url_password(url)
        )),
    }
}
