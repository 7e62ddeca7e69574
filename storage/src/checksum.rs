//! Upload checksums: Proxmox's `checksum-algorithm` + `checksum`.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use sha2::digest::DynDigest;

/// A bad algorithm name or checksum text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// Not md5, sha1, sha224, sha256, sha384 or sha512.
    #[error("unknown checksum algorithm '{name}' (expected md5, sha1, sha224, sha256, sha384 or sha512)")]
    UnknownAlgorithm {
        /// The name.
        name: String,
    },
    /// Not hex, or the wrong length for the algorithm.
    #[error("checksum '{text}' is not a {algorithm} digest ({hex_len} hex digits)")]
    Malformed {
        /// The text.
        text: String,
        /// The algorithm.
        algorithm: ChecksumAlgorithm,
        /// Expected number of hex digits.
        hex_len: usize,
    },
}

/// The digest algorithms Proxmox accepts for uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    /// MD5.
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl ChecksumAlgorithm {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Md5 => "md5",
            ChecksumAlgorithm::Sha1 => "sha1",
            ChecksumAlgorithm::Sha224 => "sha224",
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Sha384 => "sha384",
            ChecksumAlgorithm::Sha512 => "sha512",
        }
    }

    /// Digest length in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Md5 => 32,
            ChecksumAlgorithm::Sha1 => 40,
            ChecksumAlgorithm::Sha224 => 56,
            ChecksumAlgorithm::Sha256 => 64,
            ChecksumAlgorithm::Sha384 => 96,
            ChecksumAlgorithm::Sha512 => 128,
        }
    }

    fn new_digest(self) -> Box<dyn DynDigest + Send> {
        match self {
            ChecksumAlgorithm::Md5 => Box::new(md5::Md5::default()),
            ChecksumAlgorithm::Sha1 => Box::new(sha1::Sha1::default()),
            ChecksumAlgorithm::Sha224 => Box::new(sha2::Sha224::default()),
            ChecksumAlgorithm::Sha256 => Box::new(sha2::Sha256::default()),
            ChecksumAlgorithm::Sha384 => Box::new(sha2::Sha384::default()),
            ChecksumAlgorithm::Sha512 => Box::new(sha2::Sha512::default()),
        }
    }
}

impl FromStr for ChecksumAlgorithm {
    type Err = ChecksumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ChecksumAlgorithm::Md5,
            ChecksumAlgorithm::Sha1,
            ChecksumAlgorithm::Sha224,
            ChecksumAlgorithm::Sha256,
            ChecksumAlgorithm::Sha384,
            ChecksumAlgorithm::Sha512,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| ChecksumError::UnknownAlgorithm { name: s.to_owned() })
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The checksum a client says an upload has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedChecksum {
    algorithm: ChecksumAlgorithm,
    hex: String,
}

impl ExpectedChecksum {
    /// Checks that `hex` is a digest of `algorithm` (case-insensitive).
    pub fn new(algorithm: ChecksumAlgorithm, hex: &str) -> Result<Self, ChecksumError> {
        let hex = hex.trim();
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChecksumError::Malformed {
                text: hex.to_owned(),
                algorithm,
                hex_len: algorithm.hex_len(),
            });
        }
        Ok(Self {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> ChecksumAlgorithm {
        self.algorithm
    }

    /// The expected digest, lower-case hex.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Whether `actual_hex` (any case) is this digest.
    pub fn matches(&self, actual_hex: &str) -> bool {
        actual_hex.eq_ignore_ascii_case(&self.hex)
    }
}

/// A running digest of one algorithm.
pub struct ChecksumHasher {
    algorithm: ChecksumAlgorithm,
    digest: Box<dyn DynDigest + Send>,
}

impl fmt::Debug for ChecksumHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChecksumHasher")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl ChecksumHasher {
    /// A fresh digest.
    pub fn new(algorithm: ChecksumAlgorithm) -> Self {
        Self {
            algorithm,
            digest: algorithm.new_digest(),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
    }

    /// The digest as lower-case hex.
    pub fn finish_hex(self) -> String {
        to_hex(&self.digest.finalize())
    }

    /// The algorithm.
    pub fn algorithm(&self) -> ChecksumAlgorithm {
        self.algorithm
    }
}

/// Hashes a whole file.
pub fn file_checksum_hex(path: &Path, algorithm: ChecksumAlgorithm) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = ChecksumHasher::new(algorithm);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hasher.finish_hex())
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digests of "abc" from the algorithms' standards.
    const ABC: [(&str, &str); 6] = [
        ("md5", "900150983cd24fb0d6963f7d28e17f72"),
        ("sha1", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        ("sha224", "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"),
        ("sha256", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("sha384", "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"),
        ("sha512", "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"),
    ];

    #[test]
    fn every_algorithm_hashes_abc() {
        for (name, expected) in ABC {
            let algorithm: ChecksumAlgorithm = name.parse().unwrap();
            let mut hasher = ChecksumHasher::new(algorithm);
            hasher.update(b"a");
            hasher.update(b"bc");
            assert_eq!(hasher.finish_hex(), expected, "{name}");
            let want = ExpectedChecksum::new(algorithm, &expected.to_uppercase()).unwrap();
            assert!(want.matches(expected));
        }
    }

    #[test]
    fn rejects_bad_names_and_digests() {
        assert!("crc32".parse::<ChecksumAlgorithm>().is_err());
        assert!(ExpectedChecksum::new(ChecksumAlgorithm::Sha256, "abc").is_err());
        assert!(ExpectedChecksum::new(ChecksumAlgorithm::Md5, &"g".repeat(32)).is_err());
    }
}
