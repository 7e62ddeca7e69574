//! Guest configuration files as Proxmox writes them: `key: value` lines,
//! `#` description comments, and `[section]` headers for snapshots,
//! `[PENDING]` changes and `[special:…]` sections.
//!
//! Every line keeps its original text, so writing an unmodified
//! [`GuestConfig`] gives back the exact bytes it was parsed from. Changing a
//! key rewrites only that key's line.

use std::fmt;

use sha1::{Digest, Sha1};

use crate::comment_text::{decode_comment_text, encode_comment_text};

/// Names of the `[special:NAME]` sections qemu-server knows.
const SPECIAL_SECTIONS: &[&str] = &["cloudinit", "fleecing"];

/// The longest excerpt of a bad line quoted in an error message.
const MAX_QUOTED_CHARS: usize = 80;

/// Why a configuration file could not be parsed. Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "line {line}: expected 'key: value', a '#' comment or a '[section]' header, found '{text}'"
    )]
    Syntax { line: usize, text: String },
    #[error("line {line}: key '{key}' has no value")]
    EmptyValue { line: usize, key: String },
    #[error("line {line}: unknown section '[{name}]'")]
    UnknownSection { line: usize, name: String },
    #[error("line {line}: section '[{name}]' appears twice")]
    DuplicateSection { line: usize, name: String },
    #[error("line {line}: key '{key}' appears twice in one section (first on line {first_line})")]
    DuplicateKey {
        line: usize,
        key: String,
        first_line: usize,
    },
}

/// Why a change to a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("'{key}' is not a valid configuration key")]
    InvalidKey { key: String },
    #[error("value for '{key}' cannot be stored: {reason}")]
    InvalidValue { key: String, reason: &'static str },
    #[error("'{name}' is not a valid snapshot name")]
    InvalidSnapshotName { name: String },
    #[error("snapshot '{name}' already exists")]
    DuplicateSnapshot { name: String },
}

/// The SHA-1 hex digest Proxmox uses as a configuration's optimistic lock
/// (the `digest` of `GET …/config` and `PUT …/config`): computed over the
/// raw bytes of the file.
pub fn digest(text: &str) -> String {
    let hash = Sha1::digest(text.as_bytes());
    let mut hex = String::with_capacity(40);
    for byte in hash {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Perl's `\s` on byte strings, which is what Proxmox's parser trims.
fn is_config_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn trim_config_space(text: &str) -> &str {
    text.trim_matches(is_config_space)
}

/// Whether `key` is a configuration key as qemu-server accepts it: a
/// lower-case letter, then lower-case letters, `_` or `-`, then digits
/// (`memory`, `scsi0`, `amd-sev`); or a raw `lxc.` key of a container
/// (`lxc.cgroup2.devices.allow`).
pub fn is_valid_key(key: &str) -> bool {
    if let Some(rest) = key.strip_prefix("lxc.") {
        return !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
    }
    let bytes = key.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_lowercase() => {}
        _ => return false,
    }
    let name_end = bytes
        .iter()
        .position(|b| !(b.is_ascii_lowercase() || *b == b'_' || *b == b'-'))
        .unwrap_or(bytes.len());
    bytes[name_end..].iter().all(u8::is_ascii_digit)
}

/// Whether `name` is a snapshot name Proxmox accepts: a letter, then 1 to
/// 40 letters, digits, `_` or `-`.
pub fn is_valid_snapshot_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (2..=41).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// Which part of the file a [`Section`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionKind {
    /// The current configuration, before any header.
    Main,
    /// `[name]`: the configuration as it was when snapshot `name` was taken.
    Snapshot(String),
    /// `[PENDING]` (VMs) or `[pve:pending]` (containers): changes applied at
    /// the next start.
    Pending,
    /// `[special:name]`, such as `[special:cloudinit]`.
    Special(String),
}

impl SectionKind {
    /// The name used to detect duplicate headers.
    fn identity(&self) -> String {
        match self {
            SectionKind::Main => String::new(),
            SectionKind::Snapshot(name) => name.clone(),
            SectionKind::Pending => "pending".to_string(),
            SectionKind::Special(name) => format!("special:{name}"),
        }
    }
}

/// One `key: value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    key: String,
    value: String,
    raw: String,
}

impl Entry {
    fn new(key: &str, value: &str) -> Self {
        Entry {
            key: key.to_string(),
            value: value.to_string(),
            raw: format!("{key}: {value}"),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value with surrounding whitespace removed.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// One line of a section, kept with its original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// An empty or whitespace-only line (the text is the whitespace).
    Blank(String),
    /// A `#` line; the text is what follows the `#`, still percent-encoded.
    Comment(String),
    /// A `key: value` line.
    Entry(Entry),
}

impl Line {
    fn write_to(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            Line::Blank(text) => out.write_str(text),
            Line::Comment(text) => write!(out, "#{text}"),
            Line::Entry(entry) => out.write_str(&entry.raw),
        }
    }
}

/// The main configuration or one `[…]` section of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    kind: SectionKind,
    /// The header line as written; `None` for the main section.
    header: Option<String>,
    lines: Vec<Line>,
}

impl Section {
    fn new(kind: SectionKind) -> Self {
        let header = match &kind {
            SectionKind::Main => None,
            SectionKind::Snapshot(name) => Some(format!("[{name}]")),
            SectionKind::Pending => Some("[PENDING]".to_string()),
            SectionKind::Special(name) => Some(format!("[special:{name}]")),
        };
        Section {
            kind,
            header,
            lines: Vec::new(),
        }
    }

    pub fn kind(&self) -> &SectionKind {
        &self.kind
    }

    /// The lines after the header, in file order.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The value of `key`, if the section has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries()
            .find(|entry| entry.key == key)
            .map(|entry| entry.value.as_str())
    }

    /// The `key: value` entries in file order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|line| match line {
            Line::Entry(entry) => Some(entry),
            _ => None,
        })
    }

    /// Sets `key` to `value`: the existing line is rewritten where it is, or
    /// a new line is added at the end of the section (before the blank lines
    /// that separate it from the next header).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        if !is_valid_key(key) {
            return Err(ConfigError::InvalidKey {
                key: key.to_string(),
            });
        }
        check_storable_value(key, value)?;
        let new_entry = Entry::new(key, value);
        for line in &mut self.lines {
            if let Line::Entry(entry) = line {
                if entry.key == key {
                    *entry = new_entry;
                    return Ok(());
                }
            }
        }
        let at = self.end_of_content();
        self.lines.insert(at, Line::Entry(new_entry));
        Ok(())
    }

    /// Removes `key`, returning its value if it was set.
    pub fn delete(&mut self, key: &str) -> Option<String> {
        let mut removed = None;
        self.lines.retain(|line| match line {
            Line::Entry(entry) if entry.key == key => {
                removed.get_or_insert_with(|| entry.value.clone());
                false
            }
            _ => true,
        });
        removed
    }

    /// The description: the section's `#` lines, percent-decoded and joined
    /// with newlines (plus a `description:` key if one is present), without
    /// trailing whitespace. `None` if there is neither.
    pub fn description(&self) -> Option<String> {
        let mut text: Option<String> = None;
        for line in &self.lines {
            match line {
                Line::Comment(raw) => {
                    let text = text.get_or_insert_with(String::new);
                    text.push_str(&decode_comment_text(raw));
                    text.push('\n');
                }
                Line::Entry(entry) if entry.key == "description" => {
                    text.get_or_insert_with(String::new)
                        .push_str(&decode_comment_text(&entry.value));
                }
                _ => {}
            }
        }
        text.map(|text| text.trim_end_matches(is_config_space).to_string())
    }

    /// Replaces the description with `text` (an empty text removes it). It is
    /// written as `#` lines at the top of the section, one per line of text,
    /// percent-encoded as Proxmox does.
    pub fn set_description(&mut self, text: &str) {
        self.lines.retain(|line| match line {
            Line::Comment(_) => false,
            Line::Entry(entry) => entry.key != "description",
            Line::Blank(_) => true,
        });
        let text = text.trim_end_matches(is_config_space);
        if text.is_empty() {
            return;
        }
        let comments = text
            .split('\n')
            .map(|line| Line::Comment(encode_comment_text(line)));
        self.lines.splice(0..0, comments);
    }

    /// The index after the last non-blank line.
    fn end_of_content(&self) -> usize {
        self.lines
            .iter()
            .rposition(|line| !matches!(line, Line::Blank(_)))
            .map_or(0, |index| index + 1)
    }

    fn ends_with_blank(&self) -> bool {
        matches!(self.lines.last(), Some(Line::Blank(_)))
    }

    fn write_to(&self, out: &mut impl fmt::Write, first: &mut bool) -> fmt::Result {
        let mut newline = |out: &mut dyn fmt::Write| -> fmt::Result {
            if !std::mem::replace(first, false) {
                out.write_char('\n')?;
            }
            Ok(())
        };
        if let Some(header) = &self.header {
            newline(out)?;
            out.write_str(header)?;
        }
        for line in &self.lines {
            newline(out)?;
            line.write_to(out)?;
        }
        Ok(())
    }
}

fn check_storable_value(key: &str, value: &str) -> Result<(), ConfigError> {
    let reason = if value.contains('\n') {
        Some("it contains a line break")
    } else if trim_config_space(value).is_empty() && !key.starts_with("lxc.") {
        Some("it is empty")
    } else if trim_config_space(value).len() != value.len() {
        Some("it starts or ends with whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ConfigError::InvalidValue {
            key: key.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A parsed `qemu-server/<vmid>.conf` or `lxc/<vmid>.conf` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    main: Section,
    /// The `[…]` sections in file order.
    sections: Vec<Section>,
    /// Whether the text ended with a newline.
    final_newline: bool,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            main: Section::new(SectionKind::Main),
            sections: Vec::new(),
            final_newline: true,
        }
    }
}

/// What one line of a file is.
enum ParsedLine {
    Header(SectionKind),
    Line(Line),
}

fn quote_excerpt(text: &str) -> String {
    let mut excerpt: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    excerpt
}

fn parse_header(line_number: usize, line: &str) -> Result<SectionKind, ParseError> {
    let trimmed = line.trim_end_matches(is_config_space);
    let Some(name) = trimmed
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    else {
        return Err(ParseError::Syntax {
            line: line_number,
            text: quote_excerpt(line),
        });
    };
    if name.eq_ignore_ascii_case("PENDING") || name.eq_ignore_ascii_case("pve:pending") {
        return Ok(SectionKind::Pending);
    }
    if let Some(special) = name.get(..8).filter(|p| p.eq_ignore_ascii_case("special:")) {
        let special_name = &name[special.len()..];
        if let Some(known) = SPECIAL_SECTIONS
            .iter()
            .find(|known| known.eq_ignore_ascii_case(special_name))
        {
            return Ok(SectionKind::Special((*known).to_string()));
        }
    }
    if is_valid_snapshot_name(name) {
        return Ok(SectionKind::Snapshot(name.to_string()));
    }
    Err(ParseError::UnknownSection {
        line: line_number,
        name: quote_excerpt(name),
    })
}

/// Splits `key: value` (or a container's `lxc.key = value`) into the key
/// and the text after the separator.
fn split_entry(line: &str) -> Option<(&str, &str)> {
    if line.starts_with("lxc.") {
        let key_end = line
            .bytes()
            .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b)))?;
        let (key, rest) = line.split_at(key_end);
        if key.len() == "lxc.".len() {
            return None;
        }
        if let Some(value) = rest.strip_prefix(':') {
            return Some((key, value));
        }
        let value = rest.trim_start_matches(is_config_space).strip_prefix('=')?;
        return Some((key, value));
    }
    let colon = line.find(':')?;
    let key = &line[..colon];
    is_valid_key(key).then(|| (key, &line[colon + 1..]))
}

fn parse_line(line_number: usize, line: &str) -> Result<ParsedLine, ParseError> {
    if line.chars().all(is_config_space) {
        return Ok(ParsedLine::Line(Line::Blank(line.to_string())));
    }
    if line.starts_with('[') {
        return parse_header(line_number, line).map(ParsedLine::Header);
    }
    if let Some(comment) = line.strip_prefix('#') {
        return Ok(ParsedLine::Line(Line::Comment(comment.to_string())));
    }
    let Some((key, rest)) = split_entry(line) else {
        return Err(ParseError::Syntax {
            line: line_number,
            text: quote_excerpt(line),
        });
    };
    let value = trim_config_space(rest);
    if value.is_empty() && !key.starts_with("lxc.") {
        return Err(ParseError::EmptyValue {
            line: line_number,
            key: key.to_string(),
        });
    }
    Ok(ParsedLine::Line(Line::Entry(Entry {
        key: key.to_string(),
        value: value.to_string(),
        raw: line.to_string(),
    })))
}

impl GuestConfig {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a configuration file. Errors name the offending line.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let (body, final_newline) = match text.strip_suffix('\n') {
            Some(body) => (body, true),
            None => (text, false),
        };
        let mut config = GuestConfig {
            main: Section::new(SectionKind::Main),
            sections: Vec::new(),
            final_newline,
        };
        if text.is_empty() {
            return Ok(config);
        }
        // For each key of the current section: the line it was first seen on.
        let mut seen_keys: Vec<(String, usize)> = Vec::new();
        let mut seen_sections: Vec<String> = Vec::new();
        for (index, line) in body.split('\n').enumerate() {
            let line_number = index + 1;
            match parse_line(line_number, line)? {
                ParsedLine::Header(kind) => {
                    let identity = kind.identity();
                    if seen_sections.contains(&identity) {
                        return Err(ParseError::DuplicateSection {
                            line: line_number,
                            name: identity,
                        });
                    }
                    seen_sections.push(identity);
                    seen_keys.clear();
                    let mut section = Section::new(kind);
                    section.header = Some(line.to_string());
                    config.sections.push(section);
                }
                ParsedLine::Line(line) => {
                    if let Line::Entry(entry) = &line {
                        if !entry.key.starts_with("lxc.") {
                            if let Some((_, first_line)) =
                                seen_keys.iter().find(|(key, _)| *key == entry.key)
                            {
                                return Err(ParseError::DuplicateKey {
                                    line: line_number,
                                    key: entry.key.clone(),
                                    first_line: *first_line,
                                });
                            }
                            seen_keys.push((entry.key.clone(), line_number));
                        }
                    }
                    config.current_section_mut().lines.push(line);
                }
            }
        }
        Ok(config)
    }

    fn current_section_mut(&mut self) -> &mut Section {
        match self.sections.last_mut() {
            Some(section) => section,
            None => &mut self.main,
        }
    }

    /// The SHA-1 digest of the file as [`Display`](fmt::Display) writes it;
    /// for a configuration that was parsed and not changed, the digest of
    /// the original text.
    pub fn digest(&self) -> String {
        digest(&self.to_string())
    }

    /// The current configuration (everything before the first header).
    pub fn main(&self) -> &Section {
        &self.main
    }

    pub fn main_mut(&mut self) -> &mut Section {
        &mut self.main
    }

    /// Shorthand for `main().get(key)`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.main.get(key)
    }

    /// Shorthand for `main_mut().set(key, value)`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        self.main.set(key, value)
    }

    /// Shorthand for `main_mut().delete(key)`.
    pub fn delete(&mut self, key: &str) -> Option<String> {
        self.main.delete(key)
    }

    /// Shorthand for `main().description()`.
    pub fn description(&self) -> Option<String> {
        self.main.description()
    }

    /// Shorthand for `main_mut().set_description(text)`.
    pub fn set_description(&mut self, text: &str) {
        self.main.set_description(text)
    }

    /// The `[…]` sections in file order.
    pub fn sections(&self) -> impl Iterator<Item = &Section> {
        self.sections.iter()
    }

    /// Snapshot names in file order.
    pub fn snapshot_names(&self) -> impl Iterator<Item = &str> {
        self.sections
            .iter()
            .filter_map(|section| match &section.kind {
                SectionKind::Snapshot(name) => Some(name.as_str()),
                _ => None,
            })
    }

    fn position(&self, kind: &SectionKind) -> Option<usize> {
        self.sections
            .iter()
            .position(|section| section.kind == *kind)
    }

    pub fn snapshot(&self, name: &str) -> Option<&Section> {
        let index = self.position(&SectionKind::Snapshot(name.to_string()))?;
        self.sections.get(index)
    }

    pub fn snapshot_mut(&mut self, name: &str) -> Option<&mut Section> {
        let index = self.position(&SectionKind::Snapshot(name.to_string()))?;
        self.sections.get_mut(index)
    }

    /// Adds an empty snapshot section at the end of the file.
    pub fn add_snapshot(&mut self, name: &str) -> Result<&mut Section, ConfigError> {
        if !is_valid_snapshot_name(name) || name.eq_ignore_ascii_case("pending") {
            return Err(ConfigError::InvalidSnapshotName {
                name: name.to_string(),
            });
        }
        if self.snapshot(name).is_some() {
            return Err(ConfigError::DuplicateSnapshot {
                name: name.to_string(),
            });
        }
        let index = self.sections.len();
        Ok(self.insert_section(index, Section::new(SectionKind::Snapshot(name.to_string()))))
    }

    /// Removes a snapshot section, returning it.
    pub fn remove_snapshot(&mut self, name: &str) -> Option<Section> {
        let index = self.position(&SectionKind::Snapshot(name.to_string()))?;
        Some(self.sections.remove(index))
    }

    /// The `[PENDING]` section, if there is one.
    pub fn pending(&self) -> Option<&Section> {
        let index = self.position(&SectionKind::Pending)?;
        self.sections.get(index)
    }

    /// The `[PENDING]` section, added right after the main section if the
    /// file has none.
    pub fn pending_mut(&mut self) -> &mut Section {
        let index = match self.position(&SectionKind::Pending) {
            Some(index) => index,
            None => {
                self.insert_section(0, Section::new(SectionKind::Pending));
                0
            }
        };
        &mut self.sections[index]
    }

    /// Removes the `[PENDING]` section, returning it.
    pub fn remove_pending(&mut self) -> Option<Section> {
        let index = self.position(&SectionKind::Pending)?;
        Some(self.sections.remove(index))
    }

    /// A `[special:name]` section, such as `cloudinit`.
    pub fn special(&self, name: &str) -> Option<&Section> {
        let index = self.position(&SectionKind::Special(name.to_string()))?;
        self.sections.get(index)
    }

    /// Inserts `section` at `index` among the `[…]` sections, with a blank
    /// line before its header and before the header that follows it, as
    /// Proxmox writes them.
    fn insert_section(&mut self, index: usize, mut section: Section) -> &mut Section {
        let previous = match index.checked_sub(1) {
            Some(previous) => self.sections.get_mut(previous),
            None => Some(&mut self.main),
        };
        if let Some(previous) = previous {
            if !previous.ends_with_blank() {
                previous.lines.push(Line::Blank(String::new()));
            }
        }
        if index < self.sections.len() {
            section.lines.push(Line::Blank(String::new()));
        }
        self.final_newline = true;
        let index = index.min(self.sections.len());
        self.sections.insert(index, section);
        &mut self.sections[index]
    }
}

impl fmt::Display for GuestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        self.main.write_to(f, &mut first)?;
        for section in &self.sections {
            section.write_to(f, &mut first)?;
        }
        if self.final_newline && !first {
            f.write_str("\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX_VM: &str = "\
#Debian 12 web server
#managed by %3Aops%3A team
boot: order=scsi0;ide2;net0
cores: 2
ide2: local:iso/debian-12.5.0-amd64-netinst.iso,media=cdrom,size=629M
memory: 2048
name: web01
net0: virtio=BC:24:11:2A:5D:01,bridge=vmbr0,firewall=1
ostype: l26
scsi0: local-lvm:vm-100-disk-0,iothread=1,size=32G
scsihw: virtio-scsi-single
sockets: 1
";

    #[test]
    fn round_trips_and_reads_keys() {
        let config = GuestConfig::parse(LINUX_VM).unwrap();
        assert_eq!(config.to_string(), LINUX_VM);
        assert_eq!(config.get("memory"), Some("2048"));
        assert_eq!(config.get("scsihw"), Some("virtio-scsi-single"));
        assert_eq!(config.get("balloon"), None);
        assert_eq!(
            config.description().as_deref(),
            Some("Debian 12 web server\nmanaged by :ops: team")
        );
        let keys: Vec<_> = config.main().entries().map(Entry::key).collect();
        assert_eq!(keys.first(), Some(&"boot"));
        assert_eq!(keys.len(), 10);
    }

    #[test]
    fn set_replaces_in_place_and_appends_at_end() {
        let mut config = GuestConfig::parse(LINUX_VM).unwrap();
        config.set("memory", "4096").unwrap();
        config.set("onboot", "1").unwrap();
        let text = config.to_string();
        assert!(text.contains("ide2: local:iso/debian-12.5.0-amd64-netinst.iso,media=cdrom,size=629M\nmemory: 4096\nname: web01\n"));
        assert!(text.ends_with("sockets: 1\nonboot: 1\n"));
        assert_eq!(config.delete("cores").as_deref(), Some("2"));
        assert_eq!(config.delete("cores"), None);
        assert!(!config.to_string().contains("cores"));
    }

    #[test]
    fn set_rejects_unstorable_input() {
        let mut config = GuestConfig::new();
        assert!(matches!(
            config.set("Memory", "1"),
            Err(ConfigError::InvalidKey { .. })
        ));
        assert!(matches!(
            config.set("name", "a\nb"),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(config.set("name", " padded").is_err());
        assert!(config.set("name", "").is_err());
        config.set("name", "ok").unwrap();
        assert_eq!(config.to_string(), "name: ok\n");
    }

    #[test]
    fn set_description_encodes_and_goes_on_top() {
        let mut config = GuestConfig::parse("memory: 512\n").unwrap();
        config.set_description("Owner: Zoë\n100% uptime\n");
        assert_eq!(
            config.to_string(),
            "#Owner%3A Zo%C3%AB\n#100%25 uptime\nmemory: 512\n"
        );
        assert_eq!(
            config.description().as_deref(),
            Some("Owner: Zoë\n100% uptime")
        );
        config.set_description("");
        assert_eq!(config.to_string(), "memory: 512\n");
        assert_eq!(config.description(), None);
    }

    #[test]
    fn snapshots_are_sections() {
        let text = "\
cores: 1
memory: 1024
parent: before-upgrade

[before-upgrade]
cores: 1
memory: 512
snaptime: 1717171717
";
        let mut config = GuestConfig::parse(text).unwrap();
        assert_eq!(
            config.snapshot_names().collect::<Vec<_>>(),
            ["before-upgrade"]
        );
        let snapshot = config.snapshot("before-upgrade").unwrap();
        assert_eq!(snapshot.get("memory"), Some("512"));
        assert_eq!(snapshot.get("snaptime"), Some("1717171717"));

        let added = config.add_snapshot("after-upgrade").unwrap();
        added.set("memory", "1024").unwrap();
        added.set("snaptime", "1717181818").unwrap();
        assert_eq!(
            config.to_string(),
            format!("{text}\n[after-upgrade]\nmemory: 1024\nsnaptime: 1717181818\n")
        );
        assert!(matches!(
            config.add_snapshot("after-upgrade"),
            Err(ConfigError::DuplicateSnapshot { .. })
        ));
        assert!(config.add_snapshot("x").is_err());
        assert!(config.add_snapshot("pending").is_err());
        assert!(config.remove_snapshot("before-upgrade").is_some());
        assert!(config.snapshot("before-upgrade").is_none());
        let reparsed = GuestConfig::parse(&config.to_string()).unwrap();
        assert_eq!(reparsed, config);
    }

    #[test]
    fn pending_goes_before_snapshots() {
        let mut config = GuestConfig::parse("memory: 1024\n\n[snap1]\nmemory: 512\n").unwrap();
        config.pending_mut().set("memory", "2048").unwrap();
        assert_eq!(
            config.to_string(),
            "memory: 1024\n\n[PENDING]\nmemory: 2048\n\n[snap1]\nmemory: 512\n"
        );
        assert_eq!(config.pending().and_then(|p| p.get("memory")), Some("2048"));
        assert!(config.remove_pending().is_some());
        assert!(config.pending().is_none());
    }

    #[test]
    fn special_and_container_sections() {
        let text = "ide2: local-lvm:vm-100-cloudinit,media=cdrom\n\n[special:cloudinit]\nipconfig0: ip=dhcp\n";
        let config = GuestConfig::parse(text).unwrap();
        assert_eq!(
            config.special("cloudinit").and_then(|s| s.get("ipconfig0")),
            Some("ip=dhcp")
        );
        let ct = GuestConfig::parse("hostname: ct1\nlxc.apparmor.profile = unconfined\nlxc.cgroup2.devices.allow: c 10:200 rwm\nlxc.cgroup2.devices.allow: a\n\n[pve:pending]\nswap: 0\n").unwrap();
        assert_eq!(ct.get("lxc.apparmor.profile"), Some("unconfined"));
        assert_eq!(ct.pending().and_then(|p| p.get("swap")), Some("0"));
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("memory: 1\nthis is not a key\n", 2, "expected"),
            ("memory: 1\ncores:\n", 2, "no value"),
            ("memory: 1\n[not a section!]\n", 2, "unknown section"),
            ("[snap1]\n\n[snap1]\n", 3, "appears twice"),
            ("cores: 1\n\ncores: 2\n", 3, "first on line 1"),
            ("Memory: 1\n", 1, "expected"),
            (" memory: 1\n", 1, "expected"),
            ("[PENDING]\n[pending]\n", 2, "appears twice"),
        ];
        for (text, line, needle) in cases {
            let error = GuestConfig::parse(text).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("line {line}:")),
                "{text:?}: {error}"
            );
            assert!(error.contains(needle), "{text:?}: {error}");
        }
    }

    #[test]
    fn keys_follow_qemu_server_rule() {
        for key in [
            "memory",
            "scsi0",
            "amd-sev",
            "hookscript",
            "unused12",
            "lxc.idmap",
        ] {
            assert!(is_valid_key(key), "{key}");
        }
        for key in ["", "0net", "net0a", "Net0", "net_0x", "lxc.", "a.b"] {
            assert!(!is_valid_key(key), "{key}");
        }
    }

    #[test]
    fn keeps_odd_bytes() {
        for text in [
            "",
            "\n",
            "\n\n  \n",
            "memory: 512",
            "memory:512\r\n",
            "memory:\t512  \n#c\n\n\n",
            "#only a comment",
            "cores: 1\n\n[snap]\n\n\n",
        ] {
            let config = GuestConfig::parse(text).unwrap();
            assert_eq!(config.to_string(), text, "{text:?}");
        }
        let config = GuestConfig::parse("memory:\t512  \n").unwrap();
        assert_eq!(config.get("memory"), Some("512"));
    }

    #[test]
    fn digest_is_sha1_of_the_bytes() {
        assert_eq!(digest(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(digest("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let config = GuestConfig::parse(LINUX_VM).unwrap();
        assert_eq!(config.digest(), digest(LINUX_VM));
    }
}
