//! `storage.cfg` in Proxmox's section-config syntax.
//!
//! ```text
//! dir: local
//!     path /var/lib/vz
//!     content iso,vztmpl,backup
//!
//! lvmthin: local-lvm
//!     thinpool data
//!     vgname pve
//!     content rootdir,images
//! ```
//!
//! A section is a `type: id` header followed by indented `key value` lines
//! (a key alone, such as `disable`, is a flag); a blank line ends it. Lines
//! whose first non-blank character is `#` are comments. Sections and keys
//! keep their order, and unknown types and keys are kept as text, so a file
//! Proxmox wrote (tab indent, one space, a blank line after every section)
//! is written back byte for byte. Comments are not kept, as in Proxmox.

use std::io;
use std::path::{Path, PathBuf};

use sha1::Digest as _;

use crate::atomic_file::write_file_atomically;
use crate::content::{ContentError, ContentSet, ContentType};
use crate::storage_id::{StorageId, StorageIdError};

/// Keys every section type understands and that we check.
const KEY_CONTENT: &str = "content";
const KEY_DISABLE: &str = "disable";
const KEY_SHARED: &str = "shared";
const KEY_NODES: &str = "nodes";
const KEY_MAXFILES: &str = "maxfiles";
const KEY_PATH: &str = "path";
const KEY_CONTENT_DIRS: &str = "content-dirs";
const KEY_FORMAT: &str = "format";

/// Storage types Proxmox always treats as shared.
const SHARED_KINDS: [&str; 10] = [
    "iscsi",
    "nfs",
    "cifs",
    "rbd",
    "cephfs",
    "iscsidirect",
    "glusterfs",
    "zfs",
    "drbd",
    "pbs",
];

/// What is wrong with a `storage.cfg` text or an edit of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A line that is neither a header, a property, a comment nor blank.
    #[error("line {line}: cannot parse '{text}' (expected 'type: id' or an indented 'key value')")]
    Garbage {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// An indented property line before any section header.
    #[error("line {line}: property '{text}' is outside a section")]
    PropertyOutsideSection {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// The section id breaks the storage id rule.
    #[error("line {line}: {source}")]
    BadId {
        /// 1-based line number.
        line: usize,
        /// Why.
        #[source]
        source: StorageIdError,
    },
    /// Two sections with one id.
    #[error("line {line}: storage '{id}' is already defined on line {first_line}")]
    DuplicateId {
        /// 1-based line number of the second definition.
        line: usize,
        /// The id.
        id: String,
        /// Line of the first definition.
        first_line: usize,
    },
    /// A key given twice in one section.
    #[error("line {line}: storage '{id}' sets '{key}' twice")]
    DuplicateKey {
        /// 1-based line number.
        line: usize,
        /// The section.
        id: String,
        /// The key.
        key: String,
    },
    /// A known key with a value of the wrong shape.
    #[error("line {line}: storage '{id}': invalid value '{value}' for '{key}': {reason}")]
    BadValue {
        /// 1-based line number (0 for edits made through the API).
        line: usize,
        /// The section.
        id: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is expected.
        reason: String,
    },
    /// A `content` list with an unknown type.
    #[error("line {line}: storage '{id}': {source}")]
    BadContent {
        /// 1-based line number (0 for edits).
        line: usize,
        /// The section.
        id: String,
        /// Why.
        #[source]
        source: ContentError,
    },
    /// A required key is missing (`path` for `dir`).
    #[error("line {line}: {kind} storage '{id}' has no '{key}'")]
    MissingKey {
        /// Line of the section header (0 for edits).
        line: usize,
        /// Section type.
        kind: String,
        /// The section.
        id: String,
        /// The key.
        key: String,
    },
    /// A key or value that cannot be written back (line break, space in a key).
    #[error("storage '{id}': '{key}' cannot be written to storage.cfg: {reason}")]
    Unwritable {
        /// The section.
        id: String,
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// `add` with an id that exists.
    #[error("storage '{id}' already exists")]
    AlreadyExists {
        /// The id.
        id: String,
    },
}

/// Reading or writing `storage.cfg` failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not valid.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<ConfigError>,
    },
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// One `key value` line of a section. A flag such as `disable` has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The key.
    pub key: String,
    /// The value, `None` for a bare key.
    pub value: Option<String>,
}

/// One section of `storage.cfg`: `kind: id` and its properties in file order.
///
/// Known keys are checked when parsed or set, so the typed accessors below
/// never see a malformed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageEntry {
    kind: String,
    id: StorageId,
    properties: Vec<Property>,
}

impl StorageEntry {
    /// A section with no properties. `kind` is lower-cased as Proxmox does.
    pub fn new(kind: &str, id: StorageId) -> Self {
        Self {
            kind: kind.to_ascii_lowercase(),
            id,
            properties: Vec::new(),
        }
    }

    /// The section type (`dir`, `lvmthin`, ... or one we do not know).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The storage id.
    pub fn id(&self) -> &StorageId {
        &self.id
    }

    /// All properties in file order.
    pub fn properties(&self) -> &[Property] {
        &self.properties
    }

    /// The value of `key`: `Some("")` for a bare flag, `None` when absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_deref().unwrap_or(""))
    }

    /// Sets `key` (replacing it in place, or appending), after checking it.
    pub fn set(&mut self, key: &str, value: Option<&str>) -> Result<(), ConfigError> {
        check_writable(&self.id, key, value)?;
        check_property(&self.id, key, value, 0)?;
        let value = value.map(str::to_owned);
        match self.properties.iter_mut().find(|p| p.key == key) {
            Some(p) => p.value = value,
            None => self.properties.push(Property {
                key: key.to_owned(),
                value,
            }),
        }
        Ok(())
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.properties.len();
        self.properties.retain(|p| p.key != key);
        before != self.properties.len()
    }

    /// The allowed content: the `content` list, or the type's default
    /// (images and rootdir for dir-like storages) when the key is absent.
    pub fn content(&self) -> ContentSet {
        match self.get(KEY_CONTENT) {
            Some(list) => ContentSet::parse(list).unwrap_or_default(),
            None => default_content(&self.kind),
        }
    }

    /// Whether `disable` is set (bare, or non-zero).
    pub fn is_disabled(&self) -> bool {
        self.get(KEY_DISABLE).is_some_and(flag_is_set)
    }

    /// Whether the storage is shared: `shared 1`, or a type Proxmox always
    /// treats as shared (nfs, cifs, rbd, cephfs, iscsi, zfs over iSCSI, pbs...).
    pub fn is_shared(&self) -> bool {
        SHARED_KINDS.contains(&self.kind.as_str()) || self.get(KEY_SHARED).is_some_and(flag_is_set)
    }

    /// The `nodes` restriction, empty when the storage applies to all nodes.
    pub fn nodes(&self) -> Vec<&str> {
        self.get(KEY_NODES)
            .map(|list| split_list(list).collect())
            .unwrap_or_default()
    }

    /// Whether the storage applies to `node` (no `nodes` key, or listed).
    pub fn is_available_on(&self, node: &str) -> bool {
        let nodes = self.nodes();
        nodes.is_empty() || nodes.contains(&node)
    }

    /// The `path` of a directory-based storage.
    pub fn path(&self) -> Option<&Path> {
        self.get(KEY_PATH).map(Path::new)
    }

    /// `content-dirs` overrides, e.g. `iso=isos,backup=dumps`.
    pub fn content_dirs(&self) -> Vec<(ContentType, &str)> {
        self.get(KEY_CONTENT_DIRS)
            .map(|list| {
                split_list(list)
                    .filter_map(|item| {
                        let (content, dir) = item.split_once('=')?;
                        Some((content.parse().ok()?, dir))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `format` default image format, if set.
    pub fn default_format(&self) -> Option<&str> {
        self.get(KEY_FORMAT)
    }

    fn check_required(&self, line: usize) -> Result<(), ConfigError> {
        if self.kind == "dir" && self.get(KEY_PATH).is_none() {
            return Err(ConfigError::MissingKey {
                line,
                kind: self.kind.clone(),
                id: self.id.to_string(),
                key: KEY_PATH.to_owned(),
            });
        }
        Ok(())
    }
}

fn default_content(kind: &str) -> ContentSet {
    match kind {
        "dir" | "btrfs" | "lvmthin" | "zfspool" => [ContentType::Images, ContentType::Rootdir]
            .into_iter()
            .collect(),
        "lvm" | "rbd" | "nfs" | "cifs" | "iscsi" | "zfs" => {
            [ContentType::Images].into_iter().collect()
        }
        _ => ContentSet::empty(),
    }
}

fn flag_is_set(value: &str) -> bool {
    value.is_empty() || value == "1"
}

fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

fn bad_value(line: usize, id: &StorageId, key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::BadValue {
        line,
        id: id.to_string(),
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn check_writable(id: &StorageId, key: &str, value: Option<&str>) -> Result<(), ConfigError> {
    let unwritable = |reason| ConfigError::Unwritable {
        id: id.to_string(),
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(unwritable("a key must be non-empty without spaces"));
    }
    if let Some(value) = value {
        if value.chars().any(|c| c == '\n' || c == '\r' || c == '\0') {
            return Err(unwritable("the value contains a line break or NUL"));
        }
        if value.trim() != value {
            return Err(unwritable("the value has leading or trailing blanks"));
        }
    }
    Ok(())
}

/// Checks the keys whose shape we know; others are kept as text.
fn check_property(
    id: &StorageId,
    key: &str,
    value: Option<&str>,
    line: usize,
) -> Result<(), ConfigError> {
    let text = value.unwrap_or("");
    let valid_node = |n: &str| {
        n.len() <= 63
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !n.starts_with('-')
            && !n.ends_with('-')
    };
    let valid_content_dir = |item: &str| {
        item.split_once('=').is_some_and(|(content, dir)| {
            content.parse::<ContentType>().is_ok() && is_relative_subdir(dir)
        })
    };
    match key {
        KEY_CONTENT => {
            ContentSet::parse(text).map_err(|source| ConfigError::BadContent {
                line,
                id: id.to_string(),
                source,
            })?;
        }
        KEY_DISABLE | KEY_SHARED if !matches!(value, None | Some("0") | Some("1")) => {
            return Err(bad_value(line, id, key, text, "expected 0 or 1"));
        }
        KEY_MAXFILES if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(bad_value(line, id, key, text, "expected a number >= 0"));
        }
        KEY_NODES if text.is_empty() || !split_list(text).all(valid_node) => {
            return Err(bad_value(
                line,
                id,
                key,
                text,
                "expected a comma separated list of node names",
            ));
        }
        KEY_PATH if !text.starts_with('/') || text.contains(['(', ')', ';']) => {
            return Err(bad_value(line, id, key, text, "expected an absolute path"));
        }
        KEY_CONTENT_DIRS if !split_list(text).all(valid_content_dir) => {
            return Err(bad_value(
                line,
                id,
                key,
                text,
                "expected content=relative/dir items without '..'",
            ));
        }
        KEY_FORMAT if !matches!(text, "raw" | "qcow2" | "vmdk" | "subvol") => {
            return Err(bad_value(
                line,
                id,
                key,
                text,
                "expected raw, qcow2, vmdk or subvol",
            ));
        }
        // prune-backups and every other key are kept as text.
        _ => {}
    }
    Ok(())
}

/// A `content-dirs` target: relative, no empty, `.` or `..` components.
fn is_relative_subdir(dir: &str) -> bool {
    !dir.is_empty()
        && dir.len() < 1023
        && dir
            .trim_start_matches('/')
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() < 255)
}

/// The parsed `storage.cfg`: sections in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageConfig {
    entries: Vec<StorageEntry>,
}

impl StorageConfig {
    /// Parses the text of a `storage.cfg`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut entries: Vec<StorageEntry> = Vec::new();
        let mut header_lines: Vec<usize> = Vec::new();
        // Whether the previous line belongs to an open section.
        let mut in_section = false;

        for (index, raw_line) in text.split('\n').enumerate() {
            let line_no = index + 1;
            let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
            if line.trim().is_empty() {
                in_section = false;
                continue;
            }
            if line.trim_start().starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                let Some(entry) = entries.last_mut().filter(|_| in_section) else {
                    return Err(ConfigError::PropertyOutsideSection {
                        line: line_no,
                        text: line.to_owned(),
                    });
                };
                let body = line.trim();
                let (key, value) = match body.split_once([' ', '\t']) {
                    Some((key, value)) => (key, Some(value.trim_start())),
                    None => (body, None),
                };
                if entry.properties.iter().any(|p| p.key == key) {
                    return Err(ConfigError::DuplicateKey {
                        line: line_no,
                        id: entry.id.to_string(),
                        key: key.to_owned(),
                    });
                }
                check_property(&entry.id, key, value, line_no)?;
                entry.properties.push(Property {
                    key: key.to_owned(),
                    value: value.map(str::to_owned),
                });
                continue;
            }

            let Some((kind, id)) = parse_header(line) else {
                return Err(ConfigError::Garbage {
                    line: line_no,
                    text: line.to_owned(),
                });
            };
            let id = StorageId::new(id).map_err(|source| ConfigError::BadId {
                line: line_no,
                source,
            })?;
            if let Some(pos) = entries.iter().position(|e| e.id == id) {
                return Err(ConfigError::DuplicateId {
                    line: line_no,
                    id: id.to_string(),
                    first_line: header_lines.get(pos).copied().unwrap_or(0),
                });
            }
            if let (Some(prev), Some(&prev_line)) = (entries.last(), header_lines.last()) {
                prev.check_required(prev_line)?;
            }
            entries.push(StorageEntry::new(kind, id));
            header_lines.push(line_no);
            in_section = true;
        }
        if let (Some(prev), Some(&prev_line)) = (entries.last(), header_lines.last()) {
            prev.check_required(prev_line)?;
        }
        Ok(Self { entries })
    }

    /// The default when the file is missing: `dir: local` at `path` with
    /// images, rootdir, iso, vztmpl, backup and snippets.
    pub fn default_for(local_path: &Path) -> Result<Self, ConfigError> {
        let id =
            StorageId::new("local").map_err(|source| ConfigError::BadId { line: 0, source })?;
        let mut local = StorageEntry::new("dir", id);
        local.set(KEY_PATH, Some(&local_path.to_string_lossy()))?;
        local.set(
            KEY_CONTENT,
            Some("iso,vztmpl,backup,images,rootdir,snippets"),
        )?;
        local.set(KEY_SHARED, Some("0"))?;
        Ok(Self {
            entries: vec![local],
        })
    }

    /// Reads `file`; a missing file gives [`StorageConfig::default_for`]
    /// `default_local_path`.
    pub fn load(file: &Path, default_local_path: &Path) -> Result<Self, ConfigFileError> {
        match std::fs::read_to_string(file) {
            Ok(text) => Self::parse(&text).map_err(|source| ConfigFileError::Parse {
                path: file.to_owned(),
                source: Box::new(source),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::info!(file = %file.display(), "storage.cfg missing, using the default local storage");
                Self::default_for(default_local_path).map_err(|source| ConfigFileError::Parse {
                    path: file.to_owned(),
                    source: Box::new(source),
                })
            }
            Err(source) => Err(ConfigFileError::Read {
                path: file.to_owned(),
                source,
            }),
        }
    }

    /// Writes the file atomically (temp file, fsync, rename, fsync dir).
    pub fn save(&self, file: &Path) -> Result<(), ConfigFileError> {
        write_file_atomically(file, self.to_text().as_bytes()).map_err(|source| {
            ConfigFileError::Write {
                path: file.to_owned(),
                source,
            }
        })
    }

    /// The file text: for each section the header, one `\tkey value` line
    /// per property, and a blank line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            out.push_str(&entry.kind);
            out.push_str(": ");
            out.push_str(entry.id.as_str());
            out.push('\n');
            for p in &entry.properties {
                out.push('\t');
                out.push_str(&p.key);
                if let Some(v) = &p.value {
                    out.push(' ');
                    out.push_str(v);
                }
                out.push('\n');
            }
            out.push('\n');
        }
        out
    }

    /// The sections in file order.
    pub fn entries(&self) -> &[StorageEntry] {
        &self.entries
    }

    /// The section with `id`.
    pub fn get(&self, id: &StorageId) -> Option<&StorageEntry> {
        self.entries.iter().find(|e| &e.id == id)
    }

    /// The section with `id`, to edit.
    pub fn get_mut(&mut self, id: &StorageId) -> Option<&mut StorageEntry> {
        self.entries.iter_mut().find(|e| &e.id == id)
    }

    /// Appends a section; its id must be new and required keys present.
    pub fn add(&mut self, entry: StorageEntry) -> Result<(), ConfigError> {
        if self.get(&entry.id).is_some() {
            return Err(ConfigError::AlreadyExists {
                id: entry.id.to_string(),
            });
        }
        entry.check_required(0)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Removes the section with `id`, returning it.
    pub fn remove(&mut self, id: &StorageId) -> Option<StorageEntry> {
        let pos = self.entries.iter().position(|e| &e.id == id)?;
        Some(self.entries.remove(pos))
    }
}

/// Proxmox's `digest` of a config text (SHA-1, hex), for optimistic locking.
pub fn config_digest(text: &str) -> String {
    crate::checksum::to_hex(&sha1::Sha1::digest(text.as_bytes()))
}

/// `type: id`, with optional blanks after the colon and at the end.
fn parse_header(line: &str) -> Option<(&str, &str)> {
    let (kind, rest) = line.split_once(':')?;
    if kind.is_empty() || kind.contains(char::is_whitespace) {
        return None;
    }
    let id = rest.trim();
    if id.is_empty() || id.contains(char::is_whitespace) {
        return None;
    }
    Some((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file as Proxmox writes it, including types and keys we do not use.
    const PROXMOX_WRITTEN: &str = "dir: local\n\
        \tpath /var/lib/vz\n\
        \tcontent iso,vztmpl,backup\n\
        \tprune-backups keep-all=1\n\
        \tshared 0\n\
        \n\
        lvmthin: local-lvm\n\
        \tthinpool data\n\
        \tvgname pve\n\
        \tcontent rootdir,images\n\
        \n\
        pbs: backup-server\n\
        \tdisable\n\
        \tdatastore main\n\
        \tserver 192.0.2.10\n\
        \tcontent backup\n\
        \tfingerprint aa:bb\n\
        \tprune-backups keep-daily=7,keep-last=3\n\
        \tusername root@pam\n\
        \n\
        dir: nodes-only\n\
        \tpath /srv/x\n\
        \tcontent none\n\
        \tnodes pve1,pve2\n\
        \tmaxfiles 3\n\
        \n";

    fn id(s: &str) -> StorageId {
        StorageId::new(s).unwrap()
    }

    #[test]
    fn proxmox_written_file_round_trips_byte_for_byte() {
        let config = StorageConfig::parse(PROXMOX_WRITTEN).unwrap();
        assert_eq!(config.to_text(), PROXMOX_WRITTEN);
        let kinds: Vec<_> = config.entries().iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, ["dir", "lvmthin", "pbs", "dir"]);
    }

    #[test]
    fn typed_accessors_read_the_sections() {
        let config = StorageConfig::parse(PROXMOX_WRITTEN).unwrap();
        let local = config.get(&id("local")).unwrap();
        assert_eq!(local.path(), Some(Path::new("/var/lib/vz")));
        assert!(local.content().contains(ContentType::Iso));
        assert!(!local.content().contains(ContentType::Images));
        assert!(!local.is_shared() && !local.is_disabled());
        assert_eq!(local.get("prune-backups"), Some("keep-all=1"));

        let pbs = config.get(&id("backup-server")).unwrap();
        assert!(pbs.is_disabled() && pbs.is_shared());
        assert_eq!(pbs.get("disable"), Some(""));

        let restricted = config.get(&id("nodes-only")).unwrap();
        assert!(restricted.content().is_empty());
        assert_eq!(restricted.nodes(), ["pve1", "pve2"]);
        assert!(restricted.is_available_on("pve2") && !restricted.is_available_on("pve3"));
        assert!(local.is_available_on("anything"));
    }

    #[test]
    fn lenient_spacing_and_comments_parse_and_normalise() {
        let text = "# managed by hand\n\
            dir:local   \n\
            \x20\x20path   /var/lib/vz  \n\
            \x20\x20# a comment inside\n\
            \x20\x20content images\n\
            \n\n\n\
            dir: other\n\
            \tpath /srv\n";
        let config = StorageConfig::parse(text).unwrap();
        assert_eq!(
            config.to_text(),
            "dir: local\n\tpath /var/lib/vz\n\tcontent images\n\ndir: other\n\tpath /srv\n\n"
        );
        assert!(StorageConfig::parse("").unwrap().entries().is_empty());
    }

    #[test]
    fn missing_content_means_the_type_default() {
        let config = StorageConfig::parse("dir: dd\n\tpath /d\n").unwrap();
        let content = config.get(&id("dd")).unwrap().content();
        assert_eq!(content.to_string(), "images,rootdir");
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases: &[(&str, &str)] = &[
            (
                "dir: local\n\tpath /x\n\ndir: 1bad\n",
                "line 4: storage id '1bad'",
            ),
            (
                "dir: a1\n\tpath /x\n\tcontent iso,films\n",
                "line 3: storage 'a1': unknown content type 'films'",
            ),
            (
                "dir: a1\n\tpath /x\n\ndir: a1\n\tpath /y\n",
                "line 4: storage 'a1' is already defined on line 1",
            ),
            (
                "dir: a1\n\tpath /x\nthis is garbage\n",
                "line 3: cannot parse 'this is garbage'",
            ),
            (
                "\tpath /x\n",
                "line 1: property '\tpath /x' is outside a section",
            ),
            ("dir: a1\n\tpath /x\n\n\tcontent iso\n", "line 4: property"),
            (
                "dir: a1\n\tpath /x\n\tpath /y\n",
                "line 3: storage 'a1' sets 'path' twice",
            ),
            (
                "dir: a1\n\tpath /x\n\tshared yes\n",
                "line 3: storage 'a1': invalid value 'yes' for 'shared'",
            ),
            (
                "dir: a1\n\tpath relative\n",
                "line 2: storage 'a1': invalid value 'relative' for 'path'",
            ),
            (
                "dir: a1\n\tpath /x\n\tmaxfiles -1\n",
                "line 3: storage 'a1': invalid value '-1' for 'maxfiles'",
            ),
            (
                "dir: a1\n\tpath /x\n\tcontent none,iso\n",
                "combines 'none'",
            ),
            (
                "dir: a1\n\tcontent iso\n\ndir: b1\n\tpath /b\n",
                "line 1: dir storage 'a1' has no 'path'",
            ),
            (
                "dir: a1\n\tpath /x\n\tcontent-dirs iso=../etc\n",
                "line 3: storage 'a1': invalid value 'iso=../etc'",
            ),
        ];
        for (text, expected) in cases {
            let err = StorageConfig::parse(text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{text:?}: got {err:?}, want {expected:?}"
            );
        }
    }

    #[test]
    fn edits_are_checked_and_kept_in_order() {
        let mut config = StorageConfig::parse(PROXMOX_WRITTEN).unwrap();
        let local = config.get_mut(&id("local")).unwrap();
        local.set("content", Some("iso,images")).unwrap();
        assert!(local.set("content", Some("iso,cakes")).is_err());
        assert!(local.set("comment", Some("two\nlines")).is_err());
        assert!(local.set("bad key", Some("x")).is_err());
        local.set("disable", None).unwrap();
        assert!(local.remove("shared"));
        assert!(config.to_text().starts_with(
            "dir: local\n\tpath /var/lib/vz\n\tcontent iso,images\n\tprune-backups keep-all=1\n\tdisable\n\n"
        ));

        let err = config
            .add(StorageEntry::new("dir", id("local")))
            .unwrap_err();
        assert_eq!(err, ConfigError::AlreadyExists { id: "local".into() });
        assert!(matches!(
            config.add(StorageEntry::new("dir", id("nopath"))),
            Err(ConfigError::MissingKey { .. })
        ));
        assert!(config.remove(&id("local-lvm")).is_some());
        assert!(config.get(&id("local-lvm")).is_none());
    }

    #[test]
    fn default_has_local_with_six_content_types() {
        let config = StorageConfig::default_for(Path::new("/var/lib/vz")).unwrap();
        assert_eq!(
            config.to_text(),
            "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup,images,rootdir,snippets\n\tshared 0\n\n"
        );
        assert_eq!(config.entries()[0].content().iter().count(), 6);
    }

    #[test]
    fn load_and_save_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("storage.cfg");
        let missing = StorageConfig::load(&file, Path::new("/srv/vz")).unwrap();
        assert_eq!(missing.entries()[0].path(), Some(Path::new("/srv/vz")));

        std::fs::write(&file, PROXMOX_WRITTEN).unwrap();
        let mut config = StorageConfig::load(&file, Path::new("/unused")).unwrap();
        config.remove(&id("backup-server"));
        config.save(&file).unwrap();
        let reread = std::fs::read_to_string(&file).unwrap();
        assert_eq!(reread, config.to_text());
        assert!(!reread.contains("backup-server"));
        // Nothing but the file itself is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        std::fs::write(&file, "dir: xy\n").unwrap();
        let err = StorageConfig::load(&file, Path::new("/unused")).unwrap_err();
        assert!(err.to_string().contains("has no 'path'"), "{err}");
    }

    #[test]
    fn digest_is_sha1_of_the_text() {
        assert_eq!(
            config_digest(""),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }
}
