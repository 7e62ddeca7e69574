//! Content types a storage may hold (`content images,iso,...`).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A content type name that Proxmox does not know, or a bad combination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// Not one of images, rootdir, iso, vztmpl, backup, snippets, import.
    #[error("unknown content type '{name}' (known: images, rootdir, iso, vztmpl, backup, snippets, import, none)")]
    Unknown {
        /// The rejected name.
        name: String,
    },
    /// `none` was listed together with real content types.
    #[error("content list '{list}' combines 'none' with other content types")]
    NoneCombined {
        /// The whole list.
        list: String,
    },
    /// The list was empty (Proxmox writes `none` for that).
    #[error("content list is empty (write 'none' for a storage without content)")]
    Empty,
}

/// What a volume holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContentType {
    /// Backups (`dump/`).
    Backup,
    /// VM disk images (`images/<vmid>/`).
    Images,
    /// Disk images and OVAs waiting to be imported (`import/`).
    Import,
    /// CD/DVD images (`template/iso/`).
    Iso,
    /// Container root filesystems (`private/` on a dir storage).
    Rootdir,
    /// Snippets such as cloud-init or hook scripts (`snippets/`).
    Snippets,
    /// Container templates (`template/cache/`).
    Vztmpl,
}

impl ContentType {
    /// Every content type, in Proxmox's spelling order (alphabetical).
    pub const ALL: [ContentType; 7] = [
        ContentType::Backup,
        ContentType::Images,
        ContentType::Import,
        ContentType::Iso,
        ContentType::Rootdir,
        ContentType::Snippets,
        ContentType::Vztmpl,
    ];

    /// The name used in `storage.cfg` and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Backup => "backup",
            ContentType::Images => "images",
            ContentType::Import => "import",
            ContentType::Iso => "iso",
            ContentType::Rootdir => "rootdir",
            ContentType::Snippets => "snippets",
            ContentType::Vztmpl => "vztmpl",
        }
    }
}

impl FromStr for ContentType {
    type Err = ContentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ContentType::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ContentError::Unknown { name: s.to_owned() })
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of content types, as in `content iso,vztmpl,backup`.
///
/// `none` in the file is the empty set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentSet(BTreeSet<ContentType>);

impl ContentSet {
    /// The empty set (`none`).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses a comma separated list (Proxmox also accepts spaces and
    /// semicolons as separators).
    pub fn parse(list: &str) -> Result<Self, ContentError> {
        let mut set = BTreeSet::new();
        let mut saw_none = false;
        let mut saw_any = false;
        for name in list
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            saw_any = true;
            if name == "none" {
                saw_none = true;
            } else {
                set.insert(name.parse::<ContentType>()?);
            }
        }
        if !saw_any {
            return Err(ContentError::Empty);
        }
        if saw_none && !set.is_empty() {
            return Err(ContentError::NoneCombined {
                list: list.to_owned(),
            });
        }
        Ok(Self(set))
    }

    /// Whether `content` is in the set.
    pub fn contains(&self, content: ContentType) -> bool {
        self.0.contains(&content)
    }

    /// Adds `content`.
    pub fn insert(&mut self, content: ContentType) {
        self.0.insert(content);
    }

    /// Whether the set is empty (`none`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members, in alphabetical order.
    pub fn iter(&self) -> impl Iterator<Item = ContentType> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<ContentType> for ContentSet {
    fn from_iter<I: IntoIterator<Item = ContentType>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Formats as the API's `content` string: alphabetical, comma separated,
/// `none` for the empty set.
impl fmt::Display for ContentSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for content in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(content.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_none() {
        let set = ContentSet::parse("iso,vztmpl,backup").unwrap();
        assert!(set.contains(ContentType::Iso) && set.contains(ContentType::Backup));
        assert!(!set.contains(ContentType::Images));
        assert_eq!(set.to_string(), "backup,iso,vztmpl");
        assert!(ContentSet::parse("none").unwrap().is_empty());
        assert_eq!(ContentSet::empty().to_string(), "none");
    }

    #[test]
    fn rejects_unknown_and_bad_combinations() {
        assert_eq!(
            ContentSet::parse("iso,movies"),
            Err(ContentError::Unknown {
                name: "movies".into()
            })
        );
        assert!(matches!(
            ContentSet::parse("none,iso"),
            Err(ContentError::NoneCombined { .. })
        ));
        assert_eq!(ContentSet::parse(" , "), Err(ContentError::Empty));
    }
}
