//! Configuration errors: where in which file, under which key, and what is
//! wrong. Owns the `file:line:col: key: message` format that `medic check`
//! prints, and the conversion of byte offsets in the file into lines and
//! columns.

use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based position in a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`. An offset past the end (or
    /// inside a multi-byte character) is clamped to the nearest valid one
    /// before it.
    pub fn from_offset(text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem found in a configuration file.
///
/// Displays as `<file>:<line>:<col>: <key>: <message>`, leaving out
/// `:<line>:<col>` when the position is unknown and `<key>: ` when no key is
/// concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// The dotted path of the key concerned, like `routes[0].matchers[1]`;
    /// empty when the error is not about one key.
    pub key: String,
    /// What is wrong, on one line.
    pub message: String,
}

impl ConfigError {
    /// An error about `file` as a whole, such as it being unreadable.
    pub fn for_file(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            location: None,
            key: String::new(),
            message: message.into(),
        }
    }

    /// The error the TOML parser (or serde, for unknown keys and wrong
    /// types) reported for `text`, the contents of `file`.
    pub(crate) fn from_toml(file: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            location: error
                .span()
                .map(|span| Location::from_offset(text, span.start)),
            key: String::new(),
            // Syntax errors come on several lines; ours are one line each.
            message: error.message().trim().replace('\n', "; "),
        }
    }
}

impl ConfigError {
    /// The same problem as a warning: `<file>:<line>:<col>: warning: <key>: <message>`.
    pub fn as_warning(&self) -> String {
        let mut text = self.file.display().to_string();
        if let Some(location) = self.location {
            text.push_str(&format!(":{location}"));
        }
        text.push_str(": warning: ");
        if !self.key.is_empty() {
            text.push_str(&format!("{}: ", self.key));
        }
        text.push_str(&self.message);
        text
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(location) = self.location {
            write!(f, ":{location}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a configuration file, in file order. Never empty.
///
/// Displays as one error per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![error])
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_lines_and_character_columns() {
        let text = "a = 1\nbé = \"x\"\n";
        let check = |offset, line, column| {
            assert_eq!(
                Location::from_offset(text, offset),
                Location { line, column },
                "offset {offset}"
            );
        };
        check(0, 1, 1);
        check(4, 1, 5);
        check(6, 2, 1);
        check(9, 2, 3); // after the two-byte 'é'
        check(8, 2, 2); // inside 'é': clamped to its start
        check(1000, 3, 1); // past the end
    }

    #[test]
    fn display_leaves_out_unknown_parts() {
        let mut error = ConfigError {
            file: PathBuf::from("config/medic.toml"),
            location: Some(Location {
                line: 14,
                column: 13,
            }),
            key: "routes[0].verify_for".to_owned(),
            message: "bad".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "config/medic.toml:14:13: routes[0].verify_for: bad"
        );
        error.key.clear();
        assert_eq!(error.to_string(), "config/medic.toml:14:13: bad");
        error.location = None;
        assert_eq!(error.to_string(), "config/medic.toml: bad");

        let errors = ConfigErrors(vec![error.clone(), error]);
        assert_eq!(
            errors.to_string(),
            "config/medic.toml: bad\nconfig/medic.toml: bad"
        );
    }
}
