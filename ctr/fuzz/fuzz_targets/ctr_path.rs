//! Feeds arbitrary bytes to ctr's template path sanitizer. The input is a
//! member name, optionally followed by a NUL and a link target. Checks that
//! nothing panics, that an accepted name is normalised (no empty, `.` or
//! `..` components, not absolute, no NUL) and reads back the same, and that
//! the symbolic-link check agrees with a plain model of resolving the
//! target from the link's directory.

#![no_main]

#[path = "../../src/path.rs"]
mod path;

use path::{parse_hardlink_target, EntryPath};
use libfuzzer_sys::fuzz_target;

/// Resolves `target` by name from the directory holding the link at
/// `link`; false if it climbs above the root.
fn stays_inside(link: &EntryPath, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    let mut stack: Vec<&[u8]> = link.components().iter().map(Vec::as_slice).collect();
    stack.pop();
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if stack.pop().is_none() {
                    return false;
                }
            }
            other => stack.push(other),
        }
    }
    true
}

fn check_name(name: &[u8]) -> Option<EntryPath> {
    let path = EntryPath::parse(name).ok()?;
    let _ = path.to_string();
    let bytes = path.to_bytes();
    assert!(!bytes.contains(&0), "NUL in an accepted name");
    assert!(!bytes.starts_with(b"/"), "accepted name is absolute");
    for c in path.components() {
        assert!(!c.is_empty() && c != b"." && c != b"..", "component {c:?} kept");
        assert!(!c.contains(&b'/'));
        assert!(c.len() <= path::MAX_COMPONENT);
    }
    assert!(bytes.len() <= name.len(), "normalising made the name longer");
    if path.is_root() {
        assert!(bytes.is_empty());
    } else {
        let again = EntryPath::parse(&bytes).expect("a normalised name parses");
        assert_eq!(again, path, "normalised name reads back differently");
        let hard = parse_hardlink_target(name).expect("a non-root name is a hard-link target");
        assert_eq!(hard, path);
    }
    Some(path)
}

fuzz_target!(|data: &[u8]| {
    let (name, target) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    if data.contains(&0) {
        assert!(EntryPath::parse(data).is_err(), "a name with a NUL was accepted");
    }
    let Some(link) = check_name(name) else {
        return;
    };
    let Some(target) = target else {
        return;
    };
    let result = link.check_symlink_target(target);
    let _ = result.as_ref().map_err(|e| e.to_string());
    let plausible = !target.is_empty()
        && !target.contains(&0)
        && target.len() <= path::MAX_PATH
        && target
            .split(|b| *b == b'/')
            .all(|c| c.len() <= path::MAX_COMPONENT || target.starts_with(b"/"));
    if plausible {
        assert_eq!(
            result.is_ok(),
            stays_inside(&link, target),
            "link check disagrees with the model for {target:?}"
        );
    } else {
        assert!(result.is_err(), "implausible target {target:?} accepted");
    }
});
