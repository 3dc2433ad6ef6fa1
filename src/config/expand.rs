//! `${ENV_VAR}` expansion in configuration string values.
//!
//! Expansion is done on each string value after TOML parsing, never on the
//! file's text, so a variable's value can't change the file's structure.
//! The syntax:
//!
//! - `${NAME}`: the variable's value; an error when it is not set (set but
//!   empty is fine, and gives an empty string);
//! - `${NAME:-default}`: the variable's value, or `default` when it is unset
//!   or empty (the default is taken literally, up to the first `}`);
//! - `$$`: a literal `$`;
//! - `$` followed by anything else: kept as it is (so `$HOME` and regex
//!   anchors like `^foo$` need no escaping).
//!
//! The lookup is injected, so tests never touch the process environment.

/// Why a string value could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ExpandError {
    /// `${NAME}` without a default, and `NAME` is not set.
    #[error("environment variable {0} is not set (write ${{{0}:-default}} to give a default)")]
    Unset(String),
    /// `${` with no `}` after it.
    #[error("unterminated \"${{\" (write \"$$\" for a literal \"$\")")]
    Unterminated,
    /// `${...}` whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid environment variable name {0:?} in \"${{...}}\"")]
    InvalidName(String),
}

/// Expands `input`, looking variables up with `lookup`.
pub(crate) fn expand(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    // Every index below comes from finding an ASCII character, so the
    // slices always fall on character boundaries.
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or(ExpandError::Unterminated)?;
            out.push_str(&substitute(&braced[..end], lookup)?);
            rest = &braced[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of one `${...}`, given what is between the braces.
fn substitute(body: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let (name, default) = match body.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (body, None),
    };
    if !super::is_identifier(name) {
        return Err(ExpandError::InvalidName(name.to_owned()));
    }
    match (lookup(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_owned()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(ExpandError::Unset(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment with `HOST=db`, `EMPTY=` and nothing else.
    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn check(input: &str, expected: Result<&str, ExpandError>) {
        assert_eq!(
            expand(input, &env),
            expected.map(str::to_owned),
            "input {input:?}"
        );
    }

    #[test]
    fn plain_strings_are_unchanged() {
        check("", Ok(""));
        check("sqlite://data/medic.db", Ok("sqlite://data/medic.db"));
        check("héllo wörld", Ok("héllo wörld"));
    }

    #[test]
    fn variables_are_substituted() {
        check("${HOST}", Ok("db"));
        check(
            "postgres://${HOST}:5432/medic",
            Ok("postgres://db:5432/medic"),
        );
        check("${HOST}${HOST}", Ok("dbdb"));
        check("${EMPTY}", Ok(""));
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        check("${MISSING:-fallback}", Ok("fallback"));
        check("${EMPTY:-fallback}", Ok("fallback"));
        check("${HOST:-fallback}", Ok("db"));
        check("${MISSING:-}", Ok(""));
        check("${MISSING:-a:-b $x}", Ok("a:-b $x"));
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        check("$$", Ok("$"));
        check("$${HOST}", Ok("${HOST}"));
        check("cost: $$5", Ok("cost: $5"));
        check("$$$$", Ok("$$"));
    }

    #[test]
    fn other_dollars_are_kept() {
        check("$HOST", Ok("$HOST"));
        check("^disk.*$", Ok("^disk.*$"));
        check("a $ b", Ok("a $ b"));
        check("$", Ok("$"));
    }

    #[test]
    fn unset_variables_without_default_are_errors() {
        check("${MISSING}", Err(ExpandError::Unset("MISSING".to_owned())));
        check(
            "x ${HOST} ${MISSING} y",
            Err(ExpandError::Unset("MISSING".to_owned())),
        );
        assert_eq!(
            ExpandError::Unset("MISSING".to_owned()).to_string(),
            "environment variable MISSING is not set (write ${MISSING:-default} to give a default)"
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        check("${HOST", Err(ExpandError::Unterminated));
        check("${}", Err(ExpandError::InvalidName(String::new())));
        check("${1X}", Err(ExpandError::InvalidName("1X".to_owned())));
        check("${A B}", Err(ExpandError::InvalidName("A B".to_owned())));
        check("${:-x}", Err(ExpandError::InvalidName(String::new())));
    }
}
