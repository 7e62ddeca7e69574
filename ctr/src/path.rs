//! The path sanitizer for template entries: the names a tar archive gives
//! its members and the targets of its links, checked before anything is
//! created. An archive is data from outside; nothing it names may point
//! outside the root it is unpacked into.
//!
//! This is a policy check on bytes. The unpacker does not rely on it alone:
//! it also walks every path component by component without following
//! symbolic links (see `unpack`), so even a name that passed here cannot
//! leave the root through a link the archive created earlier.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Longest single component Linux accepts (`NAME_MAX`).
pub const MAX_COMPONENT: usize = 255;
/// Longest path Linux accepts (`PATH_MAX` less the terminating NUL).
pub const MAX_PATH: usize = 4095;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is absolute")]
    Absolute,
    #[error("the name has a '..' component")]
    ParentComponent,
    #[error("the name contains a NUL byte")]
    Nul,
    #[error("a component is longer than {MAX_COMPONENT} bytes")]
    ComponentTooLong,
    #[error("the name is longer than {MAX_PATH} bytes")]
    TooLong,
    #[error("the link target is empty")]
    EmptyTarget,
    #[error("the link target leaves the root")]
    TargetEscapes,
}

/// A checked, normalised path relative to the unpack root: no empty, `.`
/// or `..` components, no NUL, no leading `/`. No components means the
/// root itself (an archive's `./` entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryPath {
    components: Vec<Vec<u8>>,
}

impl EntryPath {
    /// Checks an archive member's name. `./a//b/` becomes `a/b`; `.` and
    /// `./` are the root.
    pub fn parse(name: &[u8]) -> Result<EntryPath, PathError> {
        if name.is_empty() {
            return Err(PathError::Empty);
        }
        if name.contains(&0) {
            return Err(PathError::Nul);
        }
        if name.len() > MAX_PATH {
            return Err(PathError::TooLong);
        }
        if name[0] == b'/' {
            return Err(PathError::Absolute);
        }
        let mut components = Vec::new();
        for part in name.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err(PathError::ParentComponent),
                _ if part.len() > MAX_COMPONENT => return Err(PathError::ComponentTooLong),
                _ => components.push(part.to_vec()),
            }
        }
        Ok(EntryPath { components })
    }

    /// The root itself.
    pub fn root() -> EntryPath {
        EntryPath {
            components: Vec::new(),
        }
    }

    /// True for the root.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The components, outermost first.
    pub fn components(&self) -> &[Vec<u8>] {
        &self.components
    }

    /// All components but the last, and the last; `None` for the root.
    pub fn split_last(&self) -> Option<(&[Vec<u8>], &[u8])> {
        self.components
            .split_last()
            .map(|(last, parents)| (parents, last.as_slice()))
    }

    /// True if the first component is `name` (`dev` for `dev/null`).
    pub fn starts_with(&self, name: &[u8]) -> bool {
        self.components.first().is_some_and(|c| c == name)
    }

    /// The path joined with `/`, without a leading `./`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.components.join(&b'/')
    }

    /// The path as a relative `PathBuf` (empty for the root).
    pub fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(OsStr::from_bytes(&self.to_bytes()))
    }

    /// Checks the target of a symbolic link stored at `self`.
    ///
    /// An absolute target is allowed: inside the running container it is
    /// resolved against the container's root, and the host never follows
    /// links in a container's tree. A relative target is resolved by name
    /// from the link's directory and refused if its `..` components climb
    /// above the root (`etc/x -> ../../etc/shadow`).
    pub fn check_symlink_target(&self, target: &[u8]) -> Result<(), PathError> {
        if target.is_empty() {
            return Err(PathError::EmptyTarget);
        }
        if target.contains(&0) {
            return Err(PathError::Nul);
        }
        if target.len() > MAX_PATH {
            return Err(PathError::TooLong);
        }
        if target[0] == b'/' {
            return Ok(());
        }
        // The link's directory: every component but the link's own name.
        let mut depth = self.components.len().saturating_sub(1);
        for part in target.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    depth = depth.checked_sub(1).ok_or(PathError::TargetEscapes)?;
                }
                _ if part.len() > MAX_COMPONENT => return Err(PathError::ComponentTooLong),
                _ => depth += 1,
            }
        }
        Ok(())
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Checks the target of a hard link: the name of another member of the
/// same archive, under the same rules as member names (never the root).
pub fn parse_hardlink_target(target: &[u8]) -> Result<EntryPath, PathError> {
    if target.is_empty() {
        return Err(PathError::EmptyTarget);
    }
    let path = EntryPath::parse(target)?;
    if path.is_root() {
        return Err(PathError::EmptyTarget);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: &str) -> String {
        EntryPath::parse(name.as_bytes()).unwrap().to_string()
    }

    fn err(name: &[u8]) -> PathError {
        EntryPath::parse(name).unwrap_err()
    }

    #[test]
    fn normalises_dots_and_slashes() {
        assert_eq!(ok("./etc/passwd"), "etc/passwd");
        assert_eq!(ok("etc//./network/"), "etc/network");
        assert_eq!(ok("./"), ".");
        assert_eq!(ok("."), ".");
        assert!(EntryPath::parse(b"./").unwrap().is_root());
        assert_eq!(ok("a.."), "a..");
        assert_eq!(ok("..."), "...");
    }

    #[test]
    fn refuses_hostile_names() {
        assert_eq!(err(b""), PathError::Empty);
        assert_eq!(err(b"/etc/passwd"), PathError::Absolute);
        assert_eq!(err(b"//etc"), PathError::Absolute);
        assert_eq!(err(b"../x"), PathError::ParentComponent);
        assert_eq!(err(b"a/../../x"), PathError::ParentComponent);
        assert_eq!(err(b"a/.."), PathError::ParentComponent);
        assert_eq!(err(b"a\0b"), PathError::Nul);
        assert_eq!(err(&[b'a'; 256]), PathError::ComponentTooLong);
        assert_eq!(err(&[b'a'; 4096]), PathError::TooLong);
        assert!(EntryPath::parse(&[b'a'; 255]).is_ok());
    }

    #[test]
    fn symlink_targets() {
        let link = EntryPath::parse(b"usr/lib/os-release").unwrap();
        assert!(link.check_symlink_target(b"../../etc/x").is_ok());
        assert_eq!(
            link.check_symlink_target(b"../../../etc/shadow"),
            Err(PathError::TargetEscapes)
        );
        assert!(link.check_symlink_target(b"/etc/shadow").is_ok());
        assert!(link.check_symlink_target(b"./x/../y").is_ok());
        assert_eq!(link.check_symlink_target(b""), Err(PathError::EmptyTarget));
        let top = EntryPath::parse(b"lib").unwrap();
        assert!(top.check_symlink_target(b"usr/lib").is_ok());
        assert_eq!(
            top.check_symlink_target(b".."),
            Err(PathError::TargetEscapes)
        );
        // Going down and back up stays inside.
        assert!(top.check_symlink_target(b"a/b/../../c").is_ok());
        assert_eq!(
            top.check_symlink_target(b"a/../../c"),
            Err(PathError::TargetEscapes)
        );
    }

    #[test]
    fn hardlink_targets() {
        assert_eq!(
            parse_hardlink_target(b"./usr/bin/x").unwrap().to_string(),
            "usr/bin/x"
        );
        assert_eq!(
            parse_hardlink_target(b"/etc/passwd"),
            Err(PathError::Absolute)
        );
        assert_eq!(
            parse_hardlink_target(b"../etc/passwd"),
            Err(PathError::ParentComponent)
        );
        assert_eq!(parse_hardlink_target(b"./"), Err(PathError::EmptyTarget));
    }
}
