//! The host network model in Proxmox's `/etc/network/interfaces` syntax.
//!
//! [`InterfacesFile`] keeps the file as lines: parsing and writing back an
//! unchanged file gives the same bytes, comments and blank lines included,
//! and edits ([`InterfacesFile::set_option`], [`InterfacesFile::add_iface`],
//! [`InterfacesFile::remove_iface`], [`InterfacesFile::set_auto`]) change
//! only the lines they are about. [`InterfacesFile::config`] reads the typed
//! view, [`NetworkConfig`], and [`validate`] checks it against itself and
//! the links the kernel has. Every error carries the 1-based line number it
//! is about.
//!
//! The syntax is ifupdown's: `auto NAME...` (and `allow-hotplug`) lines,
//! `iface NAME [inet|inet6] [static|manual|dhcp|loopback]` stanzas whose
//! following lines are `option value` pairs, `#` comments, and `source` /
//! `source-directory` lines, which are kept but not followed. Option names
//! may be written with `_` instead of `-` (old Proxmox files do).

mod model;
mod validate;

pub use model::{
    BondMode, BondOpts, BridgeOpts, Family, Iface, IfaceKind, Method, NetworkConfig, VlanOpts,
    XmitHashPolicy,
};
pub use validate::validate;

use std::fmt;

/// A problem in an interfaces file, at a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct InterfacesError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub kind: ErrorKind,
}

/// What is wrong with an interfaces file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// A line that is not valid ifupdown syntax.
    #[error("{0}")]
    Syntax(String),
    /// An option whose value does not parse.
    #[error("{key}: invalid value `{value}`: {reason}")]
    BadValue {
        /// The option.
        key: String,
        /// Its value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An interface declared in two stanzas of the same family.
    #[error("interface {name} is declared twice for {family} (first on line {first})")]
    DuplicateIface {
        /// The interface.
        name: String,
        /// inet or inet6.
        family: Family,
        /// Where it was first declared.
        first: usize,
    },
    /// Options that make an interface two kinds at once.
    #[error("interface {name} cannot be both a {a} and a {b}")]
    ConflictingKind {
        /// The interface.
        name: String,
        /// One kind.
        a: &'static str,
        /// The other kind.
        b: &'static str,
    },
    /// A port, bond slave or VLAN raw device that is neither declared nor
    /// present in the kernel.
    #[error("{iface}: unknown interface {port}")]
    UnknownPort {
        /// The interface naming it.
        iface: String,
        /// The unknown name.
        port: String,
    },
    /// A link that is a port or slave of two interfaces (or twice of one).
    #[error("{port} is a port of both {first} and {second}")]
    PortUsedTwice {
        /// The port.
        port: String,
        /// The first interface using it.
        first: String,
        /// The second.
        second: String,
    },
    /// Interfaces that are (through ports, slaves or raw devices) below
    /// themselves.
    #[error("interfaces form a loop: {0}")]
    Loop(String),
    /// A bridge used as a port of another bridge or of a bond.
    #[error("bridge {port} cannot be a port of {iface}")]
    BridgeAsPort {
        /// The interface naming the bridge.
        iface: String,
        /// The bridge.
        port: String,
    },
    /// The same address on two interfaces, or twice on one.
    #[error("address {address} is already used by {first_iface} (line {first_line})")]
    DuplicateAddress {
        /// The address (without prefix).
        address: String,
        /// The interface that has it first.
        first_iface: String,
        /// Where.
        first_line: usize,
    },
    /// A port that cannot be one: the loopback device.
    #[error("{port} cannot be a port of {iface}")]
    InvalidPort {
        /// The interface naming it.
        iface: String,
        /// The port.
        port: String,
    },
    /// An address on a bridge port or bond slave, where it is unusable.
    #[error("{iface} is a port of {controller}; its address belongs on {controller}")]
    AddressOnPort {
        /// The port.
        iface: String,
        /// Its bridge or bond.
        controller: String,
    },
    /// A forward delay outside what the kernel takes with STP on.
    #[error("bridge-fd must be 2 to 30 with bridge-stp on")]
    ForwardDelayWithStp,
    /// Two default gateways of the same family.
    #[error("second {family} gateway (the first is on {first_iface}, line {first_line})")]
    DuplicateGateway {
        /// inet or inet6.
        family: Family,
        /// The interface with the first one.
        first_iface: String,
        /// Where.
        first_line: usize,
    },
}

impl InterfacesError {
    pub(crate) fn new(line: usize, kind: ErrorKind) -> InterfacesError {
        InterfacesError { line, kind }
    }

    pub(crate) fn syntax(line: usize, msg: impl Into<String>) -> InterfacesError {
        InterfacesError::new(line, ErrorKind::Syntax(msg.into()))
    }
}

/// All problems found in a file, in line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfacesErrors(pub Vec<InterfacesError>);

impl fmt::Display for InterfacesErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InterfacesErrors {}

impl InterfacesErrors {
    /// The line of the first problem.
    pub fn first_line(&self) -> Option<usize> {
        self.0.first().map(|e| e.line)
    }
}

/// What a line of the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// Empty or whitespace only.
    Blank,
    /// A `#` comment.
    Comment,
    /// `auto` or `allow-*` with the interfaces it names.
    Auto {
        /// `auto`, `allow-hotplug`, ...
        keyword: String,
        /// The interfaces.
        names: Vec<String>,
    },
    /// `iface NAME FAMILY METHOD`, opening a stanza.
    Iface {
        /// Interface name.
        name: String,
        /// Address family.
        family: Family,
        /// Configuration method.
        method: Method,
    },
    /// `key value` inside a stanza.
    Option {
        /// The option name as written.
        key: String,
        /// The value, trimmed.
        value: String,
    },
    /// `source` or `source-directory`, kept but not followed.
    Source,
}

/// One line of the file: its exact text and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The text without its `\n` (a `\r` of a CRLF file stays here).
    pub raw: String,
    /// What it is.
    pub kind: LineKind,
}

/// An interfaces file, kept line by line so that it is written back as it
/// was read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfacesFile {
    lines: Vec<Line>,
    /// Whether the last line ends with a newline.
    final_newline: bool,
}

/// Whether `key` is `want`, treating `_` and `-` alike.
pub(crate) fn key_is(key: &str, want: &str) -> bool {
    key.len() == want.len()
        && key
            .bytes()
            .zip(want.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// Whether `name` is usable as a Linux interface name.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            // A backslash could end an `auto` line that names it, and
            // ifupdown reads that as a line continuation.
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'#' | b'\\'))
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split_ascii_whitespace()
}

fn parse_line(number: usize, raw: &str, in_stanza: bool) -> Result<LineKind, InterfacesError> {
    let text = raw.trim_matches(|c: char| c.is_ascii_whitespace());
    if text.is_empty() {
        return Ok(LineKind::Blank);
    }
    if text.starts_with('#') {
        return Ok(LineKind::Comment);
    }
    if text.ends_with('\\') {
        return Err(InterfacesError::syntax(
            number,
            "line continuations (`\\` at the end of a line) are not supported",
        ));
    }
    let mut w = words(text);
    let first = w.next().unwrap_or_default();
    match first {
        "auto" | "allow-auto" | "allow-hotplug" | "allow-ovs" => {
            let names: Vec<String> = w.map(str::to_string).collect();
            if names.is_empty() {
                return Err(InterfacesError::syntax(
                    number,
                    format!("`{first}` names no interface"),
                ));
            }
            if let Some(bad) = names.iter().find(|n| !valid_ifname(n)) {
                return Err(InterfacesError::syntax(
                    number,
                    format!("`{bad}` is not a valid interface name"),
                ));
            }
            Ok(LineKind::Auto {
                keyword: first.to_string(),
                names,
            })
        }
        "iface" => {
            let name = w
                .next()
                .ok_or_else(|| InterfacesError::syntax(number, "`iface` without a name"))?;
            if !valid_ifname(name) {
                return Err(InterfacesError::syntax(
                    number,
                    format!("`{name}` is not a valid interface name"),
                ));
            }
            let family = match w.next() {
                None => Family::Inet,
                Some(f) => f.parse().map_err(|()| {
                    InterfacesError::syntax(
                        number,
                        format!("unknown address family `{f}` (want inet or inet6)"),
                    )
                })?,
            };
            let method = match w.next() {
                None => Method::Manual,
                Some(m) => m.parse().map_err(|()| {
                    InterfacesError::syntax(
                        number,
                        format!("unsupported method `{m}` (want static, manual, dhcp or loopback)"),
                    )
                })?,
            };
            if let Some(extra) = w.next() {
                return Err(InterfacesError::syntax(
                    number,
                    format!("unexpected `{extra}` after the method"),
                ));
            }
            Ok(LineKind::Iface {
                name: name.to_string(),
                family,
                method,
            })
        }
        "source" | "source-directory" => Ok(LineKind::Source),
        "mapping" | "rename" | "template" => Err(InterfacesError::syntax(
            number,
            format!("`{first}` stanzas are not supported"),
        )),
        key => {
            if !in_stanza {
                return Err(InterfacesError::syntax(
                    number,
                    format!("option `{key}` outside of an iface stanza"),
                ));
            }
            let value = text[key.len()..].trim_matches(|c: char| c.is_ascii_whitespace());
            Ok(LineKind::Option {
                key: key.to_string(),
                value: value.to_string(),
            })
        }
    }
}

impl InterfacesFile {
    /// Parses the text of an interfaces file. Only syntax is checked here;
    /// [`InterfacesFile::config`] and [`validate`] check the meaning.
    pub fn parse(text: &str) -> Result<InterfacesFile, InterfacesErrors> {
        let mut lines = Vec::new();
        let mut errors = Vec::new();
        let final_newline = text.ends_with('\n');
        let body = text.strip_suffix('\n').unwrap_or(text);
        let mut in_stanza = false;
        if !text.is_empty() {
            for (i, raw) in body.split('\n').enumerate() {
                let number = i + 1;
                match parse_line(number, raw, in_stanza) {
                    Ok(kind) => {
                        match kind {
                            LineKind::Iface { .. } => in_stanza = true,
                            LineKind::Auto { .. } | LineKind::Source => in_stanza = false,
                            _ => {}
                        }
                        lines.push(Line {
                            raw: raw.to_string(),
                            kind,
                        });
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        if errors.is_empty() {
            Ok(InterfacesFile {
                lines,
                final_newline,
            })
        } else {
            Err(InterfacesErrors(errors))
        }
    }

    /// The lines, in order.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The typed view of the file, with every value checked.
    pub fn config(&self) -> Result<NetworkConfig, InterfacesErrors> {
        model::build(self)
    }

    /// Parses, reads the typed view and validates it against the links the
    /// kernel has (`existing`), in one go: what an apply needs.
    pub fn parse_valid(
        text: &str,
        existing: &[String],
    ) -> Result<(InterfacesFile, NetworkConfig), InterfacesErrors> {
        let file = InterfacesFile::parse(text)?;
        let config = file.config()?;
        validate(&config, existing)?;
        Ok((file, config))
    }

    /// The index range of the stanza `iface NAME FAMILY`: its header and
    /// the lines up to the next top-level line, trailing blank lines
    /// excluded.
    fn stanza(&self, name: &str, family: Family) -> Option<(usize, usize)> {
        let start = self.lines.iter().position(|l| {
            matches!(&l.kind, LineKind::Iface { name: n, family: f, .. } if n == name && *f == family)
        })?;
        let mut end = start + 1;
        let mut last_content = start + 1;
        let mut pending_comments = false;
        while end < self.lines.len() {
            match self.lines[end].kind {
                LineKind::Iface { .. } | LineKind::Auto { .. } | LineKind::Source => break,
                LineKind::Blank => pending_comments = true,
                // A comment after a blank line belongs to what follows,
                // unless more options of this stanza come after it.
                LineKind::Comment if pending_comments => {}
                _ => {
                    last_content = end + 1;
                    pending_comments = false;
                }
            }
            end += 1;
        }
        Some((start, last_content))
    }

    /// The indentation used by option lines (a tab if there are none).
    fn indent(&self) -> String {
        self.lines
            .iter()
            .find_map(|l| match l.kind {
                LineKind::Option { .. } => {
                    let n = l.raw.len() - l.raw.trim_start().len();
                    (n > 0).then(|| l.raw[..n].to_string())
                }
                _ => None,
            })
            .unwrap_or_else(|| "\t".to_string())
    }

    /// Sets (`Some`) or removes (`None`) option `key` of the stanza
    /// `iface NAME FAMILY`. An existing line is rewritten in place; a new
    /// one goes after the stanza's last option. Returns `false` when there
    /// is no such stanza.
    pub fn set_option(
        &mut self,
        name: &str,
        family: Family,
        key: &str,
        value: Option<&str>,
    ) -> bool {
        let Some((start, end)) = self.stanza(name, family) else {
            return false;
        };
        let existing = (start + 1..end).find(
            |&i| matches!(&self.lines[i].kind, LineKind::Option { key: k, .. } if key_is(k, key)),
        );
        let indent = self.indent();
        let line = |v: &str| Line {
            raw: format!("{indent}{key} {v}"),
            kind: LineKind::Option {
                key: key.to_string(),
                value: v.to_string(),
            },
        };
        match (existing, value) {
            (Some(i), Some(v)) => {
                // Keep the way the key was written.
                let LineKind::Option { key: written, .. } = &self.lines[i].kind else {
                    unreachable!("found as an option line");
                };
                let written = written.clone();
                let lead = &self.lines[i].raw
                    [..self.lines[i].raw.len() - self.lines[i].raw.trim_start().len()];
                self.lines[i] = Line {
                    raw: format!("{lead}{written} {v}"),
                    kind: LineKind::Option {
                        key: written,
                        value: v.to_string(),
                    },
                };
            }
            (Some(i), None) => {
                self.lines.remove(i);
            }
            (None, Some(v)) => {
                let after = (start + 1..end)
                    .rev()
                    .find(|&i| matches!(self.lines[i].kind, LineKind::Option { .. }))
                    .unwrap_or(start);
                self.lines.insert(after + 1, line(v));
            }
            (None, None) => {}
        }
        true
    }

    /// Sets the method of the stanza `iface NAME FAMILY`. Returns `false`
    /// when there is no such stanza.
    pub fn set_method(&mut self, name: &str, family: Family, method: Method) -> bool {
        let Some((start, _)) = self.stanza(name, family) else {
            return false;
        };
        if let LineKind::Iface { method: m, .. } = &self.lines[start].kind {
            if *m == method {
                return true;
            }
        }
        self.lines[start] = Line {
            raw: format!("iface {name} {family} {method}"),
            kind: LineKind::Iface {
                name: name.to_string(),
                family,
                method,
            },
        };
        true
    }

    /// Appends a new stanza, preceded by a blank line (and an `auto` line
    /// if `auto`). Fails if the stanza exists already.
    pub fn add_iface(
        &mut self,
        name: &str,
        family: Family,
        method: Method,
        auto: bool,
        options: &[(&str, &str)],
    ) -> Result<(), InterfacesError> {
        if !valid_ifname(name) {
            return Err(InterfacesError::syntax(
                self.lines.len() + 1,
                format!("`{name}` is not a valid interface name"),
            ));
        }
        if let Some((start, _)) = self.stanza(name, family) {
            return Err(InterfacesError::new(
                start + 1,
                ErrorKind::DuplicateIface {
                    name: name.to_string(),
                    family,
                    first: start + 1,
                },
            ));
        }
        let indent = self.indent();
        if !self.lines.is_empty() && !self.final_newline {
            // The old last line needs its newline now.
            self.final_newline = true;
        }
        if self.lines.last().is_some_and(|l| l.kind != LineKind::Blank) {
            self.lines.push(Line {
                raw: String::new(),
                kind: LineKind::Blank,
            });
        }
        if auto && !self.is_auto(name) {
            self.lines.push(Line {
                raw: format!("auto {name}"),
                kind: LineKind::Auto {
                    keyword: "auto".into(),
                    names: vec![name.to_string()],
                },
            });
        }
        self.lines.push(Line {
            raw: format!("iface {name} {family} {method}"),
            kind: LineKind::Iface {
                name: name.to_string(),
                family,
                method,
            },
        });
        for (k, v) in options {
            self.lines.push(Line {
                raw: format!("{indent}{k} {v}"),
                kind: LineKind::Option {
                    key: k.to_string(),
                    value: v.to_string(),
                },
            });
        }
        self.final_newline = true;
        Ok(())
    }

    /// The `#` comment lines inside the stanza `iface NAME FAMILY` (after
    /// its header, before the next top-level line), without the `#`,
    /// joined by newlines; `None` when there are none. Proxmox's API keeps
    /// an interface's `comments` there.
    pub fn comments(&self, name: &str, family: Family) -> Option<String> {
        let (start, end) = self.stanza(name, family)?;
        let text: Vec<&str> = self.lines[start + 1..end]
            .iter()
            .filter(|l| l.kind == LineKind::Comment)
            .map(|l| l.raw.trim_start().trim_start_matches('#'))
            .collect();
        (!text.is_empty()).then(|| text.join("\n"))
    }

    /// Replaces the comment lines of the stanza `iface NAME FAMILY` with
    /// `text` (one `#` line per line of it, after the stanza's options), or
    /// removes them. Returns `false` when there is no such stanza.
    pub fn set_comments(&mut self, name: &str, family: Family, text: Option<&str>) -> bool {
        let Some((start, end)) = self.stanza(name, family) else {
            return false;
        };
        let mut at = end;
        for i in (start + 1..end).rev() {
            if self.lines[i].kind == LineKind::Comment {
                self.lines.remove(i);
                at -= 1;
            }
        }
        for (n, line) in text
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
        {
            self.lines.insert(
                at + n,
                Line {
                    raw: format!("#{line}"),
                    kind: LineKind::Comment,
                },
            );
        }
        if at >= self.lines.len().saturating_sub(1) {
            self.final_newline = true;
        }
        true
    }

    /// Whether an `auto` line names `name`.
    pub fn is_auto(&self, name: &str) -> bool {
        self.lines.iter().any(|l| {
            matches!(&l.kind, LineKind::Auto { keyword, names } if keyword == "auto" && names.iter().any(|n| n == name))
        })
    }

    /// Adds `name` to the `auto` lines or removes it from them.
    pub fn set_auto(&mut self, name: &str, auto: bool) {
        if auto == self.is_auto(name) {
            return;
        }
        if auto {
            let at = self
                .lines
                .iter()
                .position(|l| matches!(&l.kind, LineKind::Iface { name: n, .. } if n == name))
                .unwrap_or(self.lines.len());
            self.lines.insert(
                at,
                Line {
                    raw: format!("auto {name}"),
                    kind: LineKind::Auto {
                        keyword: "auto".into(),
                        names: vec![name.to_string()],
                    },
                },
            );
            if at == self.lines.len() - 1 {
                self.final_newline = true;
            }
            return;
        }
        let mut i = 0;
        while i < self.lines.len() {
            if let LineKind::Auto { keyword, names } = &self.lines[i].kind {
                if keyword == "auto" && names.iter().any(|n| n == name) {
                    let rest: Vec<String> = names.iter().filter(|n| *n != name).cloned().collect();
                    if rest.is_empty() {
                        self.lines.remove(i);
                        continue;
                    }
                    self.lines[i] = Line {
                        raw: format!("auto {}", rest.join(" ")),
                        kind: LineKind::Auto {
                            keyword: "auto".into(),
                            names: rest,
                        },
                    };
                }
            }
            i += 1;
        }
    }

    /// Removes every stanza of `name` and its `auto` mentions, with the
    /// blank line that separated a stanza from what came before. Returns
    /// whether there was a stanza.
    pub fn remove_iface(&mut self, name: &str) -> bool {
        self.set_auto(name, false);
        let mut found = false;
        for family in [Family::Inet, Family::Inet6] {
            if let Some((start, end)) = self.stanza(name, family) {
                self.lines.drain(start..end);
                if start > 0
                    && self.lines[start - 1].kind == LineKind::Blank
                    && self
                        .lines
                        .get(start)
                        .is_none_or(|l| l.kind == LineKind::Blank)
                {
                    self.lines.remove(start - 1);
                } else if start == 0
                    && self
                        .lines
                        .first()
                        .is_some_and(|l| l.kind == LineKind::Blank)
                {
                    self.lines.remove(0);
                }
                found = true;
            }
        }
        found
    }
}

impl fmt::Display for InterfacesFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(&l.raw)?;
        }
        if self.final_newline {
            f.write_str("\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
