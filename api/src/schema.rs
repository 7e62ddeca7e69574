//! Parameter schemas: what each endpoint takes, checked before it runs.
//!
//! Each endpoint declares its parameters once ([`Param`]); the router
//! validates every request against that declaration, and the published
//! description of the API ([`crate::router::describe`]) is generated from
//! it. Errors use Proxmox's wording, keyed by parameter name.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::params::Params;

/// Proxmox's message for a required parameter that is missing.
pub const MISSING: &str = "property is missing and it is not optional";

/// Proxmox's message for a parameter no schema declares.
pub const UNDECLARED: &str =
    "property is not defined in schema and the schema does not allow additional properties";

/// A named check for string values.
#[derive(Debug)]
pub struct Format {
    /// The name shown in the API description, such as `pve-userid`.
    pub name: &'static str,
    /// Returns why `value` is wrong.
    pub check: fn(&str) -> Result<(), String>,
}

/// The type of a parameter.
#[derive(Debug)]
pub enum Kind {
    /// Text, optionally with a format and a maximum length.
    String {
        /// The format the text must have.
        format: Option<&'static Format>,
        /// The longest accepted value, in bytes.
        max_length: usize,
    },
    /// An integer within `min..=max`.
    Integer {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
    },
    /// A number (`1.5`) within `min..=max`.
    Number {
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
    },
    /// `0` or `1` (also `true`/`false`, `yes`/`no`, `on`/`off`, which are
    /// normalized to `1`/`0`).
    Boolean,
    /// One of the listed words.
    Enum(&'static [&'static str]),
}

/// One declared parameter.
#[derive(Debug)]
pub struct Param {
    /// The name, as clients send it.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether it may be left out.
    pub optional: bool,
    /// One line for the API description.
    pub description: &'static str,
}

/// Checks parameters that only the endpoint knows by pattern (such as a
/// VM's `net0`): `None` if `key` is not one of them, else whether the
/// value is right.
pub type ExtraCheck = fn(key: &str, value: &str) -> Option<Result<(), String>>;

/// Text up to `max_length` bytes with `format`.
pub const fn string(
    name: &'static str,
    format: Option<&'static Format>,
    description: &'static str,
) -> Param {
    Param {
        name,
        kind: Kind::String {
            format,
            max_length: 4096,
        },
        optional: false,
        description,
    }
}

/// An integer within `min..=max`.
pub const fn integer(name: &'static str, min: i64, max: i64, description: &'static str) -> Param {
    Param {
        name,
        kind: Kind::Integer { min, max },
        optional: false,
        description,
    }
}

/// A boolean.
pub const fn boolean(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        kind: Kind::Boolean,
        optional: false,
        description,
    }
}

/// One of `values`.
pub const fn one_of(
    name: &'static str,
    values: &'static [&'static str],
    description: &'static str,
) -> Param {
    Param {
        name,
        kind: Kind::Enum(values),
        optional: false,
        description,
    }
}

impl Param {
    /// The same parameter, optional.
    pub const fn optional(self) -> Param {
        Param {
            optional: true,
            ..self
        }
    }

    /// The same text parameter with another maximum length.
    pub const fn max_length(self, max_length: usize) -> Param {
        match self.kind {
            Kind::String { format, .. } => Param {
                kind: Kind::String { format, max_length },
                ..self
            },
            _ => self,
        }
    }

    /// Checks `value`; returns it normalized (booleans become `0`/`1`).
    pub fn check(&self, value: &str) -> Result<String, String> {
        match &self.kind {
            Kind::String { format, max_length } => {
                if value.len() > *max_length {
                    return Err(format!("value may only be {max_length} characters long"));
                }
                if let Some(format) = format {
                    (format.check)(value).map_err(|why| {
                        format!("value does not match the format '{}': {why}", format.name)
                    })?;
                }
                Ok(value.to_owned())
            }
            Kind::Integer { min, max } => {
                let n: i64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("type check ('integer') failed - got '{value}'"))?;
                if n < *min {
                    return Err(format!("value must have a minimum value of {min}"));
                }
                if n > *max {
                    return Err(format!("value must have a maximum value of {max}"));
                }
                Ok(n.to_string())
            }
            Kind::Number { min, max } => {
                let n: f64 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite())
                    .ok_or_else(|| format!("type check ('number') failed - got '{value}'"))?;
                if n < *min {
                    return Err(format!("value must have a minimum value of {min}"));
                }
                if n > *max {
                    return Err(format!("value must have a maximum value of {max}"));
                }
                Ok(value.trim().to_owned())
            }
            Kind::Boolean => match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok("1".to_owned()),
                "0" | "false" | "no" | "off" => Ok("0".to_owned()),
                _ => Err(format!("type check ('boolean') failed - got '{value}'")),
            },
            Kind::Enum(values) => {
                if values.contains(&value) {
                    Ok(value.to_owned())
                } else {
                    Err(format!(
                        "value '{value}' does not have a value in the enumeration '{}'",
                        values.join(", ")
                    ))
                }
            }
        }
    }

    /// The parameter in the published API description.
    pub fn describe(&self) -> Value {
        let mut out = json!({
            "description": self.description,
            "optional": u8::from(self.optional),
        });
        let object = out.as_object_mut().map(|o| match &self.kind {
            Kind::String { format, max_length } => {
                o.insert("type".into(), json!("string"));
                o.insert("maxLength".into(), json!(max_length));
                if let Some(format) = format {
                    o.insert("format".into(), json!(format.name));
                }
            }
            Kind::Integer { min, max } => {
                o.insert("type".into(), json!("integer"));
                o.insert("minimum".into(), json!(min));
                o.insert("maximum".into(), json!(max));
            }
            Kind::Number { min, max } => {
                o.insert("type".into(), json!("number"));
                o.insert("minimum".into(), json!(min));
                o.insert("maximum".into(), json!(max));
            }
            Kind::Boolean => {
                o.insert("type".into(), json!("boolean"));
            }
            Kind::Enum(values) => {
                o.insert("type".into(), json!("string"));
                o.insert("enum".into(), json!(values));
            }
        });
        debug_assert!(object.is_some());
        out
    }
}

/// Parameters clients add that no endpoint uses (the web UI's cache
/// buster); they are dropped before validation.
const IGNORED: &[&str] = &["_dc"];

/// Validates `params` against `declared` (and `extra` for patterned
/// names); returns the normalized parameters or the message for each
/// wrong one.
pub fn validate(
    declared: &[Param],
    extra: Option<ExtraCheck>,
    params: &Params,
) -> Result<Params, BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    let mut normalized = Params::new();
    for (name, value) in params.iter() {
        if IGNORED.contains(&name) {
            continue;
        }
        if let Some(param) = declared.iter().find(|p| p.name == name) {
            match param.check(value) {
                Ok(value) => normalized.insert(name, value),
                Err(why) => {
                    errors.insert(name.to_owned(), why);
                }
            }
            continue;
        }
        match extra.and_then(|check| check(name, value)) {
            Some(Ok(())) => normalized.insert(name, value),
            Some(Err(why)) => {
                errors.insert(name.to_owned(), why);
            }
            None => {
                errors.insert(name.to_owned(), UNDECLARED.to_owned());
            }
        }
    }
    for param in declared {
        if !param.optional && params.get(param.name).is_none() {
            errors.insert(param.name.to_owned(), MISSING.to_owned());
        }
    }
    if errors.is_empty() {
        Ok(normalized)
    } else {
        Err(errors)
    }
}

/// Formats of Proxmox ids.
pub mod formats {
    use super::Format;
    use crate::access::ids;

    fn check(ok: bool, what: &str) -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err(format!("invalid {what}"))
        }
    }

    /// `name@realm`.
    pub static USER_ID: Format = Format {
        name: "pve-userid",
        check: |v| check(ids::is_valid_user_id(v), "user id"),
    };
    /// A user or a token: `name@realm` or `name@realm!token`.
    pub static AUTH_ID: Format = Format {
        name: "pve-auth-id",
        check: |v| {
            check(
                ids::is_valid_user_id(v) || ids::is_valid_token_id(v),
                "user or token id",
            )
        },
    };
    /// A token's own name.
    pub static TOKEN_NAME: Format = Format {
        name: "pve-tokenid",
        check: |v| check(ids::is_valid_token_name(v), "token name"),
    };
    /// A group id.
    pub static GROUP_ID: Format = Format {
        name: "pve-groupid",
        check: |v| check(ids::is_valid_group_id(v), "group id"),
    };
    /// A role id.
    pub static ROLE_ID: Format = Format {
        name: "pve-roleid",
        check: |v| check(ids::is_valid_role_id(v), "role id"),
    };
    /// A pool id.
    pub static POOL_ID: Format = Format {
        name: "pve-poolid",
        check: |v| check(ids::is_valid_pool_id(v), "pool id"),
    };
    /// An ACL path.
    pub static ACL_PATH: Format = Format {
        name: "pve-acl-path",
        check: |v| check(ids::normalize_acl_path(v).is_some(), "ACL path"),
    };
    /// A node name: a host name label.
    pub static NODE: Format = Format {
        name: "pve-node",
        check: |v| check(crate::config::validate_node_name(v).is_ok(), "node name"),
    };
    /// A list of user, group (`@g`) or token ids.
    pub static SUBJECT_LIST: Format = Format {
        name: "pve-userid-list",
        check: |v| {
            for item in v.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
                let ok = item.strip_prefix('@').map_or_else(
                    || ids::is_valid_user_id(item) || ids::is_valid_token_id(item),
                    ids::is_valid_group_id,
                );
                if !ok {
                    return Err(format!("invalid user, group or token id '{item}'"));
                }
            }
            Ok(())
        },
    };
    /// A list of ids (roles, groups).
    pub static ID_LIST: Format = Format {
        name: "pve-configid-list",
        check: |v| {
            for item in v.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
                if !ids::is_valid_role_id(item) {
                    return Err(format!("invalid id '{item}'"));
                }
            }
            Ok(())
        },
    };
    /// A list of privilege names.
    pub static PRIVILEGE_LIST: Format = Format {
        name: "pve-priv-list",
        check: |v| {
            for item in v.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
                if crate::access::privileges::privilege(item).is_none() {
                    return Err(format!("invalid privilege '{item}'"));
                }
            }
            Ok(())
        },
    };
    /// An e-mail address (loosely).
    pub static EMAIL: Format = Format {
        name: "email-opt",
        check: |v| {
            check(
                v.is_empty()
                    || (v.contains('@') && !v.chars().any(|c| c.is_whitespace() || c == ':')),
                "e-mail address",
            )
        },
    };
    /// A UPID.
    pub static UPID: Format = Format {
        name: "pve-upid",
        check: |v| check(crate::tasks::Upid::parse(v).is_some(), "UPID"),
    };
    /// Free text on one line.
    pub static SINGLE_LINE: Format = Format {
        name: "single-line",
        check: |v| check(!v.contains(['\n', '\r']), "text: must be one line"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    static DECLARED: &[Param] = &[
        string("userid", Some(&formats::USER_ID), "user"),
        integer("vmid", 100, 999_999_999, "guest").optional(),
        boolean("enable", "on/off").optional(),
        one_of("source", &["archive", "active", "all"], "which").optional(),
        string("comment", None, "text").optional().max_length(5),
    ];

    fn params(pairs: &[(&str, &str)]) -> Params {
        let mut p = Params::new();
        for (k, v) in pairs {
            p.insert(*k, *v);
        }
        p
    }

    #[test]
    fn valid_parameters_are_normalized() {
        let out = validate(
            DECLARED,
            None,
            &params(&[
                ("userid", "a@pve"),
                ("enable", "true"),
                ("vmid", "100"),
                ("_dc", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(out.get("enable"), Some("1"));
        assert_eq!(out.get("_dc"), None);
    }

    #[test]
    fn every_wrong_parameter_is_named() {
        let errors = validate(
            DECLARED,
            None,
            &params(&[
                ("vmid", "99"),
                ("enable", "maybe"),
                ("source", "x"),
                ("comment", "too long"),
                ("bogus", "1"),
            ]),
        )
        .unwrap_err();
        assert_eq!(errors["userid"], MISSING);
        assert_eq!(errors["vmid"], "value must have a minimum value of 100");
        assert!(errors["enable"].contains("boolean"));
        assert!(errors["source"].contains("enumeration"));
        assert!(errors["comment"].contains("5 characters"));
        assert_eq!(errors["bogus"], UNDECLARED);
        let errors = validate(
            DECLARED,
            None,
            &params(&[("userid", "nope"), ("vmid", "x")]),
        )
        .unwrap_err();
        assert!(errors["userid"].contains("pve-userid"));
        assert!(errors["vmid"].contains("integer"));
    }

    #[test]
    fn extra_checks_cover_patterned_names() {
        fn extra(key: &str, value: &str) -> Option<Result<(), String>> {
            key.strip_prefix("net")?.parse::<u8>().ok()?;
            Some(if value.is_empty() {
                Err("empty".into())
            } else {
                Ok(())
            })
        }
        let out = validate(
            DECLARED,
            Some(extra),
            &params(&[("userid", "a@pve"), ("net0", "x")]),
        )
        .unwrap();
        assert_eq!(out.get("net0"), Some("x"));
        let errors = validate(
            DECLARED,
            Some(extra),
            &params(&[("userid", "a@pve"), ("net1", ""), ("netx", "1")]),
        )
        .unwrap_err();
        assert_eq!(errors["net1"], "empty");
        assert_eq!(errors["netx"], UNDECLARED);
    }

    #[test]
    fn descriptions() {
        let d = DECLARED[1].describe();
        assert_eq!(d["type"], "integer");
        assert_eq!(d["optional"], 1);
        assert_eq!(DECLARED[0].describe()["format"], "pve-userid");
    }
}
