//! Table-driven checking of property strings against the properties a key
//! allows, as Proxmox's JSON schema formats describe them.

use crate::property_string::{excerpt, PropertyString, PropertySyntaxError};

/// Why a value does not fit its format. Messages name the property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    #[error(transparent)]
    Syntax(#[from] PropertySyntaxError),
    #[error("unknown property '{key}'")]
    UnknownProperty { key: String },
    #[error("property '{key}' is given twice")]
    DuplicateProperty { key: String },
    #[error("property '{key}' is required")]
    MissingProperty { key: String },
    #[error("value '{value}' has no key, and this format has no default key")]
    NoDefaultKey { value: String },
    #[error("property '{key}': invalid value '{value}': {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
}

impl PropertyError {
    pub(crate) fn invalid(key: &str, value: &str, reason: impl Into<String>) -> Self {
        PropertyError::InvalidValue {
            key: key.to_string(),
            value: excerpt(value),
            reason: reason.into(),
        }
    }
}

/// What values a property takes.
#[derive(Clone, Copy)]
pub(crate) enum ValueKind {
    /// `1|on|yes|true` or `0|off|no|false`, any case.
    Boolean,
    /// A decimal integer within the bounds.
    Integer { min: i64, max: i64 },
    /// A non-negative decimal number.
    Number,
    /// One of the listed words.
    Enum(&'static [&'static str]),
    /// Checked by a function returning the reason for a bad value.
    Text(fn(&str) -> Result<(), String>),
}

/// One allowed property.
pub(crate) struct Rule {
    pub key: &'static str,
    pub kind: ValueKind,
}

pub(crate) const fn rule(key: &'static str, kind: ValueKind) -> Rule {
    Rule { key, kind }
}

/// A property-string format: its rules, which key a bare value belongs to,
/// and which keys are other names for a rule's key.
pub(crate) struct Format<'a> {
    pub rules: &'a [&'a [Rule]],
    pub default_key: Option<&'static str>,
    pub aliases: &'a [(&'static str, &'static str)],
}

/// Parses a boolean the way Proxmox does.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    const TRUE: &[&str] = &["1", "on", "yes", "true"];
    const FALSE: &[&str] = &["0", "off", "no", "false"];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(value)) {
        Some(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(value)) {
        Some(false)
    } else {
        None
    }
}

/// Parses an optionally signed decimal integer.
pub(crate) fn parse_integer(value: &str) -> Option<i64> {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Parses a non-negative decimal number such as `12`, `0.5` or `100.25`.
pub(crate) fn parse_number(value: &str) -> Option<f64> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, "0"));
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !is_digits(whole) || !is_digits(fraction) {
        return None;
    }
    value.parse().ok().filter(|n: &f64| n.is_finite())
}

pub(crate) fn check_value(key: &str, value: &str, kind: ValueKind) -> Result<(), PropertyError> {
    match kind {
        ValueKind::Boolean => parse_bool(value)
            .map(|_| ())
            .ok_or_else(|| PropertyError::invalid(key, value, "expected 0 or 1")),
        ValueKind::Integer { min, max } => match parse_integer(value) {
            Some(n) if (min..=max).contains(&n) => Ok(()),
            Some(_) if max == i64::MAX => Err(PropertyError::invalid(
                key,
                value,
                format!("must be at least {min}"),
            )),
            Some(_) => Err(PropertyError::invalid(
                key,
                value,
                format!("must be between {min} and {max}"),
            )),
            None => Err(PropertyError::invalid(key, value, "expected an integer")),
        },
        ValueKind::Number => parse_number(value)
            .map(|_| ())
            .ok_or_else(|| PropertyError::invalid(key, value, "expected a non-negative number")),
        ValueKind::Enum(words) => {
            if words.contains(&value) {
                Ok(())
            } else {
                Err(PropertyError::invalid(
                    key,
                    value,
                    format!("expected one of: {}", words.join(", ")),
                ))
            }
        }
        ValueKind::Text(check) => {
            check(value).map_err(|reason| PropertyError::invalid(key, value, reason))
        }
    }
}

/// The properties of a value that passed [`check_format`], by canonical key
/// (bare values and aliases resolved), in the order given.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub entries: Vec<(&'static str, String)>,
}

impl Checked {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean property; it was checked already, so a bad value cannot
    /// occur and reads as absent.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(parse_bool)
    }

    pub fn integer<T: TryFrom<i64>>(&self, key: &str) -> Option<T> {
        self.get(key)
            .and_then(parse_integer)
            .and_then(|n| T::try_from(n).ok())
    }

    pub fn number(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(parse_number)
    }

    pub fn string(&self, key: &str) -> Option<String> {
        self.get(key).map(str::to_string)
    }

    pub fn require(&self, key: &'static str) -> Result<&str, PropertyError> {
        self.get(key).ok_or_else(|| PropertyError::MissingProperty {
            key: key.to_string(),
        })
    }
}

fn find_rule<'a>(format: &'a Format<'a>, key: &str) -> Option<&'a Rule> {
    format
        .rules
        .iter()
        .flat_map(|rules| rules.iter())
        .find(|rule| rule.key == key)
}

/// Checks `(key, value)` pairs (key `None` for a bare value) against a
/// format: every key must be known, appear once (counting aliases and the
/// default key), and have a valid value.
pub(crate) fn check_pairs<'k>(
    format: &Format<'_>,
    pairs: impl IntoIterator<Item = (Option<&'k str>, &'k str)>,
) -> Result<Checked, PropertyError> {
    let mut checked = Checked::default();
    for (key, value) in pairs {
        let given = match key {
            Some(key) => key,
            None => format
                .default_key
                .ok_or_else(|| PropertyError::NoDefaultKey {
                    value: excerpt(value),
                })?,
        };
        let canonical = format
            .aliases
            .iter()
            .find(|(alias, _)| *alias == given)
            .map_or(given, |(_, target)| *target);
        let Some(rule) = find_rule(format, canonical) else {
            return Err(PropertyError::UnknownProperty {
                key: excerpt(given),
            });
        };
        if checked.get(rule.key).is_some() {
            return Err(PropertyError::DuplicateProperty {
                key: rule.key.to_string(),
            });
        }
        check_value(rule.key, value, rule.kind)?;
        checked.entries.push((rule.key, value.to_string()));
    }
    Ok(checked)
}

/// Parses `text` as a property string and checks it against `format`.
pub(crate) fn check_format(format: &Format<'_>, text: &str) -> Result<Checked, PropertyError> {
    let parsed = PropertyString::parse(text)?;
    check_pairs(format, parsed.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &[Rule] = &[
        rule("file", ValueKind::Text(|_| Ok(()))),
        rule("flag", ValueKind::Boolean),
        rule("count", ValueKind::Integer { min: 1, max: 10 }),
        rule("rate", ValueKind::Number),
        rule("mode", ValueKind::Enum(&["a", "b"])),
    ];
    const FORMAT: Format<'static> = Format {
        rules: &[RULES],
        default_key: Some("file"),
        aliases: &[("volume", "file")],
    };

    #[test]
    fn checks_kinds() {
        let checked = check_format(&FORMAT, "x,flag=on,count=3,rate=1.5,mode=b").unwrap();
        assert_eq!(checked.get("file"), Some("x"));
        assert_eq!(checked.bool("flag"), Some(true));
        assert_eq!(checked.integer::<u8>("count"), Some(3));
        assert_eq!(checked.number("rate"), Some(1.5));
        for (text, needle) in [
            ("flag=2", "expected 0 or 1"),
            ("count=0", "between 1 and 10"),
            ("count=x", "expected an integer"),
            ("rate=-1", "non-negative number"),
            ("rate=1e5", "non-negative number"),
            ("mode=c", "one of: a, b"),
            ("other=1", "unknown property 'other'"),
            ("x,volume=y", "given twice"),
            ("x,x", "more than one value"),
        ] {
            let error = check_format(&FORMAT, text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn bare_value_needs_default_key() {
        let format = Format {
            rules: &[RULES],
            default_key: None,
            aliases: &[],
        };
        assert!(matches!(
            check_format(&format, "x"),
            Err(PropertyError::NoDefaultKey { .. })
        ));
    }
}
