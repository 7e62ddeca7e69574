//! Property strings: the `key=value,key2=value2` values of many
//! configuration keys, such as
//! `net0: virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=10` or
//! `scsi0: local-lvm:vm-100-disk-0,size=32G`.
//!
//! A value without a key (`local-lvm:vm-100-disk-0` above) belongs to the
//! format's default key. A value that starts with `"` is quoted: it runs to
//! the next unescaped `"`, may contain `,` and `=`, and understands the
//! escapes `\"`, `\\` and `\n`. Items that are empty or only whitespace are
//! skipped, as Proxmox does. Each item keeps its original text, so writing
//! an unchanged property string gives back the same bytes.

use std::fmt;

/// The longest excerpt of input quoted in an error message.
const MAX_QUOTED_CHARS: usize = 60;

/// Shortens `text` for an error message.
pub(crate) fn excerpt(text: &str) -> String {
    let mut short: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// Why a property string is malformed, before any schema is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertySyntaxError {
    #[error("'{item}' has an '=' but no key before it")]
    MissingKey { item: String },
    #[error("property '{key}' has an empty value")]
    EmptyValue { key: String },
    #[error("'{key}' is not a valid property name")]
    InvalidKey { key: String },
    #[error("quoted value starting at byte {offset} has no closing quote")]
    UnterminatedQuote { offset: usize },
    #[error("unsupported escape '\\{escape}' in quoted value (only \\\", \\\\ and \\n)")]
    UnsupportedEscape { escape: char },
    #[error("unexpected text after the closing quote at byte {offset}")]
    TextAfterQuote { offset: usize },
    #[error("property '{key}' is given twice")]
    DuplicateKey { key: String },
    #[error("more than one value without a key ('{first}' and '{second}')")]
    DuplicateDefault { first: String, second: String },
}

/// One `key=value` (or bare `value`) item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    key: Option<String>,
    value: String,
    raw: String,
}

impl Property {
    /// The key, or `None` for a value given without a key.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The value, unquoted and unescaped.
    pub fn value(&self) -> &str {
        &self.value
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// An empty or whitespace-only item between commas.
    Blank(String),
    Property(Property),
}

/// A parsed property string; see the [module documentation](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyString {
    items: Vec<Item>,
}

/// Whether a value must be quoted to read back the same.
fn needs_quotes(value: &str, bare: bool) -> bool {
    value.is_empty()
        || value.starts_with('"')
        || value.contains([',', '\n'])
        || (bare && value.contains('='))
        || value.trim().is_empty()
}

fn write_value(out: &mut String, value: &str, bare: bool) {
    if !needs_quotes(value, bare) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Whether `key` can be written as a property name: anything the parser
/// reads as a key (non-empty, no `,` or `=`, not starting with `"`).
fn is_writable_key(key: &str) -> bool {
    !key.is_empty() && !key.starts_with('"') && !key.contains([',', '='])
}

/// Reads a quoted value at the start of `data`, returning the value and the
/// number of bytes used (including both quotes).
fn read_quoted(data: &str, offset: usize) -> Result<(String, usize), PropertySyntaxError> {
    let mut value = String::new();
    let mut chars = data.char_indices().skip(1);
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((value, index + 1)),
            '\\' => match chars.next() {
                Some((_, '"')) => value.push('"'),
                Some((_, '\\')) => value.push('\\'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, escape)) => return Err(PropertySyntaxError::UnsupportedEscape { escape }),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err(PropertySyntaxError::UnterminatedQuote { offset })
}

impl PropertyString {
    /// Parses `data`. Keys are not checked against any schema here, but a
    /// key given twice, or two values without a key, are errors.
    pub fn parse(data: &str) -> Result<Self, PropertySyntaxError> {
        let mut items = Vec::new();
        let mut start = 0;
        if data.is_empty() {
            return Ok(PropertyString { items });
        }
        loop {
            let rest = &data[start..];
            let (item, used) = Self::read_item(rest, start)?;
            items.push(item);
            let after = start + used;
            if after >= data.len() {
                break;
            }
            // `read_item` stops at a comma.
            start = after + 1;
            if start > data.len() {
                break;
            }
            if start == data.len() {
                items.push(Item::Blank(String::new()));
                break;
            }
        }
        let parsed = PropertyString { items };
        parsed.check_duplicates()?;
        Ok(parsed)
    }

    /// Reads one item at the start of `rest` (which starts at byte `offset`
    /// of the whole string). Returns the item and its length; the item ends
    /// at a comma or the end.
    fn read_item(rest: &str, offset: usize) -> Result<(Item, usize), PropertySyntaxError> {
        let item_end = |from: usize| rest[from..].find(',').map_or(rest.len(), |i| from + i);
        let (key, value_start) = if rest.starts_with('"') {
            (None, 0)
        } else {
            match rest.find([',', '=']) {
                Some(eq) if rest.as_bytes()[eq] == b'=' => {
                    let key = &rest[..eq];
                    if key.is_empty() {
                        return Err(PropertySyntaxError::MissingKey {
                            item: excerpt(&rest[..item_end(0)]),
                        });
                    }
                    (Some(key), eq + 1)
                }
                _ => (None, 0),
            }
        };
        let (value, end) = if rest[value_start..].starts_with('"') {
            let (value, used) = read_quoted(&rest[value_start..], offset + value_start)?;
            let end = value_start + used;
            if end < rest.len() && !rest[end..].starts_with(',') {
                return Err(PropertySyntaxError::TextAfterQuote {
                    offset: offset + end,
                });
            }
            (value, end)
        } else {
            let end = item_end(value_start);
            let value = &rest[value_start..end];
            if key.is_none() && value.trim().is_empty() {
                return Ok((Item::Blank(value.to_string()), end));
            }
            if let Some(key) = key {
                if value.is_empty() {
                    return Err(PropertySyntaxError::EmptyValue { key: excerpt(key) });
                }
            }
            (value.to_string(), end)
        };
        let property = Property {
            key: key.map(str::to_string),
            value,
            raw: rest[..end].to_string(),
        };
        Ok((Item::Property(property), end))
    }

    fn check_duplicates(&self) -> Result<(), PropertySyntaxError> {
        let mut seen: Vec<&str> = Vec::new();
        let mut bare: Option<&str> = None;
        for property in self.properties() {
            match property.key() {
                Some(key) => {
                    if seen.contains(&key) {
                        return Err(PropertySyntaxError::DuplicateKey { key: excerpt(key) });
                    }
                    seen.push(key);
                }
                None => {
                    if let Some(first) = bare {
                        return Err(PropertySyntaxError::DuplicateDefault {
                            first: excerpt(first),
                            second: excerpt(property.value()),
                        });
                    }
                    bare = Some(property.value());
                }
            }
        }
        Ok(())
    }

    /// The properties in order (blank items left out).
    pub fn properties(&self) -> impl Iterator<Item = &Property> {
        self.items.iter().filter_map(|item| match item {
            Item::Property(property) => Some(property),
            Item::Blank(_) => None,
        })
    }

    /// `(key, value)` pairs in order; the key is `None` for a bare value.
    pub fn iter(&self) -> impl Iterator<Item = (Option<&str>, &str)> {
        self.properties().map(|p| (p.key(), p.value()))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties()
            .find(|p| p.key() == Some(key))
            .map(Property::value)
    }

    /// The value given without a key.
    pub fn default_value(&self) -> Option<&str> {
        self.properties()
            .find(|p| p.key().is_none())
            .map(Property::value)
    }

    /// Sets `key` (or, with `None`, the value without a key), rewriting the
    /// item in place or appending it; a new bare value goes first.
    pub fn set(&mut self, key: Option<&str>, value: &str) -> Result<(), PropertySyntaxError> {
        if let Some(key) = key {
            if !is_writable_key(key) {
                return Err(PropertySyntaxError::InvalidKey { key: excerpt(key) });
            }
        }
        let mut raw = String::new();
        if let Some(key) = key {
            raw.push_str(key);
            raw.push('=');
        }
        write_value(&mut raw, value, key.is_none());
        let property = Property {
            key: key.map(str::to_string),
            value: value.to_string(),
            raw,
        };
        for item in &mut self.items {
            if let Item::Property(existing) = item {
                if existing.key.as_deref() == key {
                    *existing = property;
                    return Ok(());
                }
            }
        }
        if key.is_none() {
            self.items.insert(0, Item::Property(property));
        } else {
            self.items.push(Item::Property(property));
        }
        Ok(())
    }

    /// Removes `key` (or the bare value, with `None`), returning its value.
    pub fn remove(&mut self, key: Option<&str>) -> Option<String> {
        let index = self.items.iter().position(
            |item| matches!(item, Item::Property(property) if property.key.as_deref() == key),
        )?;
        match self.items.remove(index) {
            Item::Property(property) => Some(property.value),
            Item::Blank(_) => None,
        }
    }
}

impl fmt::Display for PropertyString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, item) in self.items.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            match item {
                Item::Blank(text) => f.write_str(text)?,
                Item::Property(property) => f.write_str(&property.raw)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(Option<String>, String)> {
        PropertyString::parse(text)
            .unwrap()
            .iter()
            .map(|(k, v)| (k.map(str::to_string), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_in_order_with_default_key() {
        let text = "local-lvm:vm-100-disk-0,size=32G,discard=on";
        let parsed = PropertyString::parse(text).unwrap();
        assert_eq!(parsed.default_value(), Some("local-lvm:vm-100-disk-0"));
        assert_eq!(parsed.get("size"), Some("32G"));
        assert_eq!(
            parsed.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            [None, Some("size"), Some("discard")]
        );
        assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn value_may_contain_equals() {
        assert_eq!(
            pairs("cmd=console=ttyS0"),
            [(Some("cmd".to_string()), "console=ttyS0".to_string())]
        );
    }

    #[test]
    fn quoted_values() {
        let text = r#""a,b=c",name="x \"y\" \\ z\n",plain=1"#;
        assert_eq!(
            pairs(text),
            [
                (None, "a,b=c".to_string()),
                (Some("name".to_string()), "x \"y\" \\ z\n".to_string()),
                (Some("plain".to_string()), "1".to_string()),
            ]
        );
        assert_eq!(PropertyString::parse(text).unwrap().to_string(), text);
    }

    #[test]
    fn blank_items_are_skipped_but_kept() {
        for text in ["a=1,,b=2", "a=1,", ",a=1", " , ", ","] {
            let parsed = PropertyString::parse(text).unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(pairs("a=1,, ,b=2").len(), 2);
        assert_eq!(pairs("").len(), 0);
    }

    #[test]
    fn syntax_errors() {
        let cases: &[(&str, &str)] = &[
            ("=x", "no key"),
            ("a=1,=x", "no key"),
            ("a=", "empty value"),
            ("a=1,a=2", "given twice"),
            ("x,y", "more than one value without a key"),
            (r#"a="open"#, "no closing quote"),
            (r#"a="x"y"#, "after the closing quote"),
            (r#"a="\t""#, "unsupported escape"),
            (r#"a="x\"#, "no closing quote"),
        ];
        for (text, needle) in cases {
            let error = PropertyString::parse(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn set_and_remove_keep_the_rest() {
        let mut parsed =
            PropertyString::parse("virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=10").unwrap();
        parsed.set(Some("tag"), "20").unwrap();
        parsed.set(Some("firewall"), "1").unwrap();
        assert_eq!(
            parsed.to_string(),
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=20,firewall=1"
        );
        assert_eq!(parsed.remove(Some("bridge")).as_deref(), Some("vmbr0"));
        parsed.set(None, "bare,value").unwrap();
        parsed.set(Some("note"), "a,b").unwrap();
        let text = parsed.to_string();
        assert_eq!(
            text,
            r#""bare,value",virtio=BC:24:11:00:00:01,tag=20,firewall=1,note="a,b""#
        );
        assert_eq!(PropertyString::parse(&text).unwrap(), parsed);
        assert!(parsed.set(Some("a=b"), "1").is_err());
        assert!(parsed.set(Some("\"a"), "1").is_err());
        assert!(parsed.set(Some(""), "1").is_err());
    }

    #[test]
    fn any_parsed_key_can_be_set_again() {
        let mut parsed = PropertyString::parse("line\nbreak=1, spaced =2").unwrap();
        parsed.set(Some("line\nbreak"), "3").unwrap();
        parsed.set(Some(" spaced "), "4").unwrap();
        assert_eq!(parsed.to_string(), "line\nbreak=3, spaced =4");
    }
}
