//! Editing firewall files in place, for the API.
//!
//! [`FwDocument`] keeps a file as its lines, so that whatever an edit does
//! not touch (comments, blank lines, spacing, unknown options) is written
//! back byte for byte. Edits work on the *entries* of a section: the lines
//! that are neither blank nor whole-line comments, numbered from 0 in
//! file order, which is how Proxmox numbers rules (`pos`). [`RuleText`]
//! is a rule line split into the fields Proxmox's API shows, written back
//! in Proxmox's order.
//!
//! Edits do not check what they write: the caller parses the result with
//! [`crate::FwFile::parse`] and compiles it before saving it.

use std::fmt;

/// A section of a firewall file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionId {
    /// `[OPTIONS]`.
    Options,
    /// `[ALIASES]`.
    Aliases,
    /// `[RULES]`.
    Rules,
    /// `[IPSET name]`.
    IpSet(String),
    /// `[group name]`.
    Group(String),
}

impl SectionId {
    fn matches(&self, other: &SectionId) -> bool {
        match (self, other) {
            (SectionId::IpSet(a), SectionId::IpSet(b))
            | (SectionId::Group(a), SectionId::Group(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }

    fn header(&self) -> String {
        match self {
            SectionId::Options => "[OPTIONS]".into(),
            SectionId::Aliases => "[ALIASES]".into(),
            SectionId::Rules => "[RULES]".into(),
            SectionId::IpSet(n) => format!("[IPSET {n}]"),
            SectionId::Group(n) => format!("[group {n}]"),
        }
    }
}

/// The section a header line opens, with the comment after it.
fn parse_header(line: &str) -> Option<(SectionId, Option<String>)> {
    let (content, comment) = split_comment(line);
    let inner = content.trim().strip_prefix('[')?.strip_suffix(']')?;
    let mut w = inner.split_whitespace();
    let head = w.next()?.to_ascii_uppercase();
    let id = match (head.as_str(), w.next()) {
        ("OPTIONS", None) => SectionId::Options,
        ("ALIASES", None) => SectionId::Aliases,
        ("RULES", None) => SectionId::Rules,
        ("IPSET", Some(n)) => SectionId::IpSet(n.to_string()),
        ("GROUP", Some(n)) => SectionId::Group(n.to_string()),
        _ => return None,
    };
    Some((id, comment))
}

/// `line` without its `# comment`, and the comment (trimmed, if not
/// empty).
pub fn split_comment(line: &str) -> (&str, Option<String>) {
    match line.split_once('#') {
        Some((content, comment)) => {
            let c = comment.trim();
            (content, (!c.is_empty()).then(|| c.to_string()))
        }
        None => (line, None),
    }
}

/// A firewall file as lines, edited in place.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FwDocument {
    lines: Vec<String>,
    final_newline: bool,
}

impl FwDocument {
    /// The document of `text` (any text: checking is the parser's job).
    pub fn parse(text: &str) -> FwDocument {
        let body = text.strip_suffix('\n').unwrap_or(text);
        FwDocument {
            // Split on `\n` only, so that a CRLF file keeps its `\r`s.
            lines: if text.is_empty() {
                Vec::new()
            } else {
                body.split('\n').map(str::to_string).collect()
            },
            final_newline: text.is_empty() || text.ends_with('\n'),
        }
    }

    /// The sections in file order, with their header comments.
    pub fn sections(&self) -> Vec<(SectionId, Option<String>)> {
        self.lines.iter().filter_map(|l| parse_header(l)).collect()
    }

    /// (header index, end index) of section `id`.
    fn range(&self, id: &SectionId) -> Option<(usize, usize)> {
        let start = self
            .lines
            .iter()
            .position(|l| parse_header(l).is_some_and(|(s, _)| s.matches(id)))?;
        let end = (start + 1..self.lines.len())
            .find(|&i| parse_header(&self.lines[i]).is_some())
            .unwrap_or(self.lines.len());
        Some((start, end))
    }

    /// Whether section `id` exists.
    pub fn has_section(&self, id: &SectionId) -> bool {
        self.range(id).is_some()
    }

    /// The comment of section `id`'s header.
    pub fn section_comment(&self, id: &SectionId) -> Option<String> {
        let (start, _) = self.range(id)?;
        parse_header(&self.lines[start]).and_then(|(_, c)| c)
    }

    fn entry_indices(&self, id: &SectionId) -> Vec<usize> {
        let Some((start, end)) = self.range(id) else {
            return Vec::new();
        };
        (start + 1..end)
            .filter(|&i| !split_comment(&self.lines[i]).0.trim().is_empty())
            .collect()
    }

    /// The entry lines of section `id`, in order.
    pub fn entries(&self, id: &SectionId) -> Vec<&str> {
        self.entry_indices(id)
            .into_iter()
            .map(|i| self.lines[i].as_str())
            .collect()
    }

    /// Adds section `id` at the end of the file (after a blank line).
    /// Returns `false` if it exists already.
    pub fn add_section(&mut self, id: &SectionId, comment: Option<&str>) -> bool {
        if self.has_section(id) {
            return false;
        }
        if self.lines.last().is_some_and(|l| !l.trim().is_empty()) {
            self.lines.push(String::new());
        }
        let mut header = id.header();
        if let Some(c) = comment.filter(|c| !c.is_empty()) {
            header.push_str(&format!(" # {c}"));
        }
        self.lines.push(header);
        self.final_newline = true;
        true
    }

    /// Replaces the header of section `id` (to rename it or change its
    /// comment). Returns `false` if there is no such section.
    pub fn set_section_header(
        &mut self,
        id: &SectionId,
        new_id: &SectionId,
        comment: Option<&str>,
    ) -> bool {
        let Some((start, _)) = self.range(id) else {
            return false;
        };
        let mut header = new_id.header();
        if let Some(c) = comment.filter(|c| !c.is_empty()) {
            header.push_str(&format!(" # {c}"));
        }
        self.lines[start] = header;
        true
    }

    /// Removes section `id` with its lines and the blank lines before it.
    /// Returns `false` if there is no such section.
    pub fn remove_section(&mut self, id: &SectionId) -> bool {
        let Some((mut start, end)) = self.range(id) else {
            return false;
        };
        while start > 0 && self.lines[start - 1].trim().is_empty() {
            start -= 1;
        }
        self.lines.drain(start..end);
        true
    }

    /// Inserts `line` as entry `pos` of section `id` (at the end if `pos`
    /// is past it), creating the section if needed.
    pub fn insert_entry(&mut self, id: &SectionId, pos: usize, line: &str) {
        self.add_section(id, None);
        let entries = self.entry_indices(id);
        let at = match entries.get(pos) {
            Some(&i) => i,
            None => {
                // After the last entry, else right after the header.
                let (start, _) = self.range(id).unwrap_or((self.lines.len(), 0));
                entries.last().map_or(start + 1, |&i| i + 1)
            }
        };
        self.lines.insert(at, line.to_string());
        if at + 1 == self.lines.len() {
            self.final_newline = true;
        }
    }

    /// Replaces entry `pos` of section `id`. Returns `false` if there is
    /// no such entry.
    pub fn replace_entry(&mut self, id: &SectionId, pos: usize, line: &str) -> bool {
        match self.entry_indices(id).get(pos) {
            Some(&i) => {
                self.lines[i] = line.to_string();
                true
            }
            None => false,
        }
    }

    /// Removes entry `pos` of section `id` and returns it.
    pub fn remove_entry(&mut self, id: &SectionId, pos: usize) -> Option<String> {
        let i = *self.entry_indices(id).get(pos)?;
        Some(self.lines.remove(i))
    }

    /// Moves entry `from` of section `id` to position `to` (counted before
    /// the move, as Proxmox's `moveto` is). Returns `false` if there is no
    /// entry `from`.
    pub fn move_entry(&mut self, id: &SectionId, from: usize, to: usize) -> bool {
        let Some(line) = self.remove_entry(id, from) else {
            return false;
        };
        let to = if to > from { to - 1 } else { to };
        self.insert_entry(id, to, &line);
        true
    }
}

impl fmt::Display for FwDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(l)?;
        }
        if self.final_newline && !self.lines.is_empty() {
            f.write_str("\n")?;
        }
        Ok(())
    }
}

/// A rule line split into the fields of Proxmox's API. Values are kept as
/// written; [`crate::FwFile::parse`] checks them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleText {
    /// `false` for a `|`-disabled rule.
    pub enable: bool,
    /// `in`, `out`, `forward` or `group`.
    pub kind: String,
    /// `ACCEPT`, `DROP`, `REJECT`, or a group's name.
    pub action: String,
    /// A macro's name (`SSH` of `SSH(ACCEPT)`).
    pub macro_name: Option<String>,
    /// `-i`.
    pub iface: Option<String>,
    /// `-source`.
    pub source: Option<String>,
    /// `-dest`.
    pub dest: Option<String>,
    /// `-p`.
    pub proto: Option<String>,
    /// `-dport`.
    pub dport: Option<String>,
    /// `-sport`.
    pub sport: Option<String>,
    /// `-icmp-type`.
    pub icmp_type: Option<String>,
    /// `-log`.
    pub log: Option<String>,
    /// The comment after `#`.
    pub comment: Option<String>,
}

impl RuleText {
    /// Splits a rule line; `None` if it is not shaped like one.
    pub fn parse(line: &str) -> Option<RuleText> {
        let (content, comment) = split_comment(line);
        let content = content.trim();
        let (enable, content) = match content.strip_prefix('|') {
            Some(rest) => (false, rest.trim_start()),
            None => (true, content),
        };
        let mut w = content.split_whitespace();
        let kind = w.next()?.to_ascii_lowercase();
        let verb = w.next()?;
        let mut rule = RuleText {
            enable,
            comment,
            ..RuleText::default()
        };
        match kind.as_str() {
            "group" => rule.action = verb.to_string(),
            "in" | "out" | "forward" => match verb.split_once('(') {
                Some((m, rest)) => {
                    rule.macro_name = Some(m.to_string());
                    rule.action = rest.strip_suffix(')')?.to_string();
                }
                None => rule.action = verb.to_string(),
            },
            _ => return None,
        }
        rule.kind = kind;
        while let Some(flag) = w.next() {
            let value = Some(w.next()?.to_string());
            match flag {
                "-i" | "-iface" => rule.iface = value,
                "-source" => rule.source = value,
                "-dest" => rule.dest = value,
                "-p" | "-proto" => rule.proto = value,
                "-dport" => rule.dport = value,
                "-sport" => rule.sport = value,
                "-icmp-type" => rule.icmp_type = value,
                "-log" => rule.log = value,
                _ => return None,
            }
        }
        Some(rule)
    }

    /// Sets field `name` (as Proxmox's API names it) to `value`, or clears
    /// it. Returns `false` for a name that is not a field.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> bool {
        let v = value.filter(|v| !v.is_empty()).map(str::to_string);
        match name {
            "type" => self.kind = v.unwrap_or_default().to_ascii_lowercase(),
            "action" => self.action = v.unwrap_or_default(),
            "macro" => self.macro_name = v,
            "iface" => self.iface = v,
            "source" => self.source = v,
            "dest" => self.dest = v,
            "proto" => self.proto = v,
            "dport" => self.dport = v,
            "sport" => self.sport = v,
            "icmp-type" => self.icmp_type = v,
            "log" => self.log = v,
            "comment" => self.comment = v,
            "enable" => self.enable = value.is_some_and(|v| v == "1"),
            _ => return false,
        }
        true
    }
}

impl fmt::Display for RuleText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.enable {
            f.write_str("|")?;
        }
        f.write_str(&self.kind.to_ascii_uppercase())?;
        match &self.macro_name {
            Some(m) => write!(f, " {m}({})", self.action)?,
            None => write!(f, " {}", self.action)?,
        }
        for (flag, value) in [
            ("-i", &self.iface),
            ("-source", &self.source),
            ("-dest", &self.dest),
            ("-p", &self.proto),
            ("-dport", &self.dport),
            ("-sport", &self.sport),
            ("-icmp-type", &self.icmp_type),
            ("-log", &self.log),
        ] {
            if let Some(v) = value {
                write!(f, " {flag} {v}")?;
            }
        }
        if let Some(c) = &self.comment {
            write!(f, " # {c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# managed by hand\n[OPTIONS]\n\nenable: 1\n\n[IPSET management] # admins\n\
        192.0.2.0/24\n\n[RULES]\n\nIN SSH(ACCEPT) -source +management -log nolog # ssh\n\
        # a note\n|OUT DROP -p udp -dport 53\nGROUP web -i vmbr0\n\n[group web]\n\
        IN ACCEPT -p tcp -dport 80,443\n";

    #[test]
    fn unchanged_documents_are_written_back_byte_for_byte() {
        for text in [
            FILE,
            "",
            "[RULES]\r\nIN DROP\r\n",
            "[RULES]\nIN DROP",
            "\n\n",
        ] {
            assert_eq!(FwDocument::parse(text).to_string(), text);
        }
    }

    #[test]
    fn rules_round_trip_in_proxmox_order() {
        for line in [
            "IN SSH(ACCEPT) -source +management -log nolog # ssh",
            "|OUT DROP -p udp -dport 53",
            "GROUP web -i vmbr0",
            "FORWARD REJECT -i net0 -source 10.0.0.0/8 -dest dc/x -p icmp -icmp-type echo-request",
        ] {
            let rule = RuleText::parse(line).unwrap();
            assert_eq!(rule.to_string(), line);
        }
        let r = RuleText::parse("IN SSH(ACCEPT) -log nolog -source a # x").unwrap();
        assert_eq!(r.macro_name.as_deref(), Some("SSH"));
        assert_eq!(r.action, "ACCEPT");
        assert_eq!(r.to_string(), "IN SSH(ACCEPT) -source a -log nolog # x");
        assert!(RuleText::parse("[RULES]").is_none());
        assert!(RuleText::parse("IN ACCEPT -bogus 1").is_none());
    }

    #[test]
    fn edits_touch_only_their_lines() {
        let mut d = FwDocument::parse(FILE);
        assert_eq!(d.entries(&SectionId::Rules).len(), 3);
        assert_eq!(
            d.section_comment(&SectionId::IpSet("MANAGEMENT".into()))
                .as_deref(),
            Some("admins")
        );
        d.insert_entry(&SectionId::Rules, 1, "IN DROP -p tcp -dport 23");
        assert!(d.replace_entry(&SectionId::Rules, 0, "IN SSH(ACCEPT)"));
        assert!(d.move_entry(&SectionId::Rules, 3, 0));
        assert_eq!(
            d.entries(&SectionId::Rules),
            [
                "GROUP web -i vmbr0",
                "IN SSH(ACCEPT)",
                "IN DROP -p tcp -dport 23",
                "|OUT DROP -p udp -dport 53"
            ]
        );
        assert!(d.move_entry(&SectionId::Rules, 0, 4));
        assert_eq!(d.entries(&SectionId::Rules)[3], "GROUP web -i vmbr0");
        assert_eq!(
            d.remove_entry(&SectionId::Rules, 3).as_deref(),
            Some("GROUP web -i vmbr0")
        );
        assert!(d.remove_section(&SectionId::Group("web".into())));
        d.insert_entry(&SectionId::Aliases, 0, "gw 192.0.2.1 # router");
        assert_eq!(
            d.to_string(),
            "# managed by hand\n[OPTIONS]\n\nenable: 1\n\n[IPSET management] # admins\n\
             192.0.2.0/24\n\n[RULES]\n\nIN SSH(ACCEPT)\n# a note\n\
             IN DROP -p tcp -dport 23\n|OUT DROP -p udp -dport 53\n\n[ALIASES]\ngw 192.0.2.1 # router\n"
        );
        crate::FwFile::parse("cluster.fw", &d.to_string()).unwrap();
        let mut empty = FwDocument::parse("");
        empty.insert_entry(&SectionId::Rules, 5, "IN ACCEPT");
        assert_eq!(empty.to_string(), "[RULES]\nIN ACCEPT\n");
    }
}
