//! Reading the firewall files of a node from their directory.

use std::io;
use std::path::{Path, PathBuf};

use crate::compile::{Features, Guest, GuestPort, Input};
use crate::config::{FwFile, ParseErrors};

/// Where the files live on an installed node.
pub const FIREWALL_DIR: &str = "/etc/oxbow/firewall";

/// A firewall file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// It does not parse.
    #[error(transparent)]
    Parse(#[from] ParseErrors),
}

fn read(dir: &Path, name: &str) -> Result<FwFile, LoadError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(FwFile::parse(name, &text)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(FwFile {
            name: name.to_string(),
            ..FwFile::default()
        }),
        Err(source) => Err(LoadError::Read { path, source }),
    }
}

/// Reads `cluster.fw`, `host.fw` and, for each guest given with its
/// ports, `<vmid>.fw` from `dir`. Missing files count as empty.
pub fn load(
    dir: &Path,
    guests: Vec<(u32, Vec<GuestPort>)>,
    features: Features,
) -> Result<Input, LoadError> {
    let mut input = Input {
        cluster: read(dir, "cluster.fw")?,
        host: read(dir, "host.fw")?,
        guests: Vec::new(),
        features,
    };
    for (vmid, ports) in guests {
        input.guests.push(Guest {
            vmid,
            file: read(dir, &format!("{vmid}.fw"))?,
            ports,
        });
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_present_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cluster.fw"), "[OPTIONS]\nenable: 1\n").unwrap();
        std::fs::write(dir.path().join("100.fw"), "[RULES]\nIN SSH(ACCEPT)\n").unwrap();
        let input = load(
            dir.path(),
            vec![(100, vec![]), (101, vec![])],
            Features::default(),
        )
        .unwrap();
        assert!(input.cluster.flag("enable", false));
        assert_eq!(input.host.name, "host.fw");
        assert!(input.host.rules.is_empty());
        assert_eq!(input.guests[0].file.rules.len(), 1);
        assert_eq!(input.guests[1].file.name, "101.fw");
        std::fs::write(dir.path().join("host.fw"), "[RULES]\nIN BOGUS\n").unwrap();
        let err = load(dir.path(), vec![], Features::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host.fw, line 2: `BOGUS` is not an action or Macro(ACTION)"
        );
    }
}
