//! The access configuration on disk and in memory.
//!
//! | file | content |
//! | --- | --- |
//! | `<state>/user.cfg` | users, groups, tokens, pools, roles, ACLs ([`UserConfig`]) |
//! | `<state>/priv/shadow.cfg` | `user@pve:<argon2id PHC string>` per `pve`-realm user |
//! | `<state>/priv/token.cfg` | `user@realm!name <sha256 hex of the secret>` per token |
//!
//! Readers take a cheap snapshot ([`AccessStore::config`]). Writers go
//! through [`AccessStore::update`], one at a time: the change is made on a
//! copy, written atomically, and only then becomes what readers see, so a
//! failed write changes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use super::user_cfg::UserConfig;
use crate::error::ServerError;
use crate::state_dir::{write_atomically, StateDir};

const PUBLIC_FILE_MODE: u32 = 0o644;
const SECRET_FILE_MODE: u32 = 0o600;

/// Why a change to the access configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The change itself was refused; the text says why.
    #[error("{0}")]
    Refused(String),
    /// The new configuration could not be written.
    #[error("cannot save the access configuration")]
    Write(#[source] ServerError),
    /// Hashing failed (no randomness).
    #[error("cannot hash the secret: {0}")]
    Hash(String),
}

#[derive(Debug, Default, Clone)]
struct Secrets {
    /// pve-realm password hashes by user id.
    passwords: BTreeMap<String, String>,
    /// SHA-256 hex of each token's secret, by token id.
    tokens: BTreeMap<String, String>,
}

/// apid's users, tokens, groups, pools, roles and ACLs.
#[derive(Debug)]
pub struct AccessStore {
    user_cfg_path: PathBuf,
    shadow_path: PathBuf,
    token_path: PathBuf,
    current: RwLock<Arc<UserConfig>>,
    secrets: RwLock<Secrets>,
    writer: Mutex<()>,
}

fn read_optional(path: &std::path::Path) -> Result<String, ServerError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(ServerError::io("cannot read", path, e)),
    }
}

fn parse_secrets(text: &str, separator: char) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (id, secret) = line.trim().split_once(separator)?;
            let secret = secret.trim().trim_end_matches(':');
            (!id.is_empty() && !secret.is_empty()).then(|| (id.to_owned(), secret.to_owned()))
        })
        .collect()
}

fn sha256_hex(text: &str) -> String {
    digest(&SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl AccessStore {
    /// Loads the access configuration from `state`; missing files mean an
    /// empty configuration with only `root@pam`.
    pub fn load(state: &StateDir) -> Result<AccessStore, ServerError> {
        let user_cfg_path = state.root().join("user.cfg");
        let shadow_path = state.private_dir().join("shadow.cfg");
        let token_path = state.private_dir().join("token.cfg");
        let (config, skipped) = UserConfig::parse(&read_optional(&user_cfg_path)?);
        for line in skipped {
            tracing::warn!(
                "{}:{}: skipped: {}",
                user_cfg_path.display(),
                line.line,
                line.reason
            );
        }
        let secrets = Secrets {
            passwords: parse_secrets(&read_optional(&shadow_path)?, ':'),
            tokens: parse_secrets(&read_optional(&token_path)?, ' '),
        };
        Ok(AccessStore {
            user_cfg_path,
            shadow_path,
            token_path,
            current: RwLock::new(Arc::new(config)),
            secrets: RwLock::new(secrets),
            writer: Mutex::new(()),
        })
    }

    /// The configuration as it is now.
    pub fn config(&self) -> Arc<UserConfig> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Changes the configuration with `change` and saves it. Nothing
    /// changes if `change` or the write fails.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut UserConfig) -> Result<T, String>,
    ) -> Result<T, StoreError> {
        self.update_with_secrets(|cfg, _| change(cfg))
    }

    fn update_with_secrets<T>(
        &self,
        change: impl FnOnce(&mut UserConfig, &mut Secrets) -> Result<T, String>,
    ) -> Result<T, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut config = (*self.config()).clone();
        let mut secrets = self
            .secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let before_secrets = (secrets.passwords.clone(), secrets.tokens.clone());
        let result = change(&mut config, &mut secrets).map_err(StoreError::Refused)?;
        // Secrets that no longer have an owner go too.
        secrets
            .passwords
            .retain(|user, _| config.users.contains_key(user));
        secrets
            .tokens
            .retain(|token, _| config.token(token).is_some());
        if (secrets.passwords.clone(), secrets.tokens.clone()) != before_secrets {
            let shadow: String = secrets
                .passwords
                .iter()
                .map(|(user, hash)| format!("{user}:{hash}:\n"))
                .collect();
            write_atomically(&self.shadow_path, shadow.as_bytes(), SECRET_FILE_MODE)
                .map_err(StoreError::Write)?;
            let tokens: String = secrets
                .tokens
                .iter()
                .map(|(token, hash)| format!("{token} {hash}\n"))
                .collect();
            write_atomically(&self.token_path, tokens.as_bytes(), SECRET_FILE_MODE)
                .map_err(StoreError::Write)?;
        }
        write_atomically(
            &self.user_cfg_path,
            config.write().as_bytes(),
            PUBLIC_FILE_MODE,
        )
        .map_err(StoreError::Write)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = secrets;
        Ok(result)
    }

    /// Hashes `password` (argon2id; takes tens of milliseconds, so call
    /// it off the request threads).
    pub fn hash_password(password: &str) -> Result<String, StoreError> {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| StoreError::Hash(e.to_string()))
    }

    /// Sets the password of `pve`-realm user `user` to an already hashed
    /// one (see [`AccessStore::hash_password`]).
    pub fn set_password_hash(&self, user: &str, hash: String) -> Result<(), StoreError> {
        self.update_with_secrets(|cfg, secrets| {
            if !cfg.users.contains_key(user) {
                return Err(format!("no such user '{user}'"));
            }
            secrets.passwords.insert(user.to_owned(), hash);
            Ok(())
        })
    }

    /// Whether `password` is `pve`-realm user `user`'s password (slow:
    /// call it off the request threads).
    pub fn verify_password(&self, user: &str, password: &str) -> bool {
        let hash = self
            .secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .passwords
            .get(user)
            .cloned();
        let Some(hash) = hash else {
            return false;
        };
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    }

    /// Creates token `token_id` with `token` through `add` (which must add
    /// it to the configuration) and returns its new secret, a random UUID.
    pub fn create_token(
        &self,
        add: impl FnOnce(&mut UserConfig) -> Result<(), String>,
        token_id: &str,
    ) -> Result<String, StoreError> {
        let mut bytes = [0u8; 16];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| StoreError::Hash("no randomness".into()))?;
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let secret = format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        );
        let hashed = sha256_hex(&secret);
        self.update_with_secrets(|cfg, secrets| {
            add(cfg)?;
            secrets.tokens.insert(token_id.to_owned(), hashed);
            Ok(())
        })?;
        Ok(secret)
    }

    /// Whether `secret` is token `token_id`'s secret.
    pub fn verify_token(&self, token_id: &str, secret: &str) -> bool {
        let secrets = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        secrets
            .tokens
            .get(token_id)
            // Comparing digests: a timing difference tells nothing about
            // the secret.
            .is_some_and(|stored| *stored == sha256_hex(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::user_cfg::{Token, User};

    fn store(dir: &std::path::Path) -> AccessStore {
        let state = StateDir::new(dir);
        state.prepare().unwrap();
        AccessStore::load(&state).unwrap()
    }

    #[test]
    fn updates_are_saved_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let access = store(dir.path());
        access
            .update(|cfg| {
                cfg.users.insert(
                    "alice@pve".into(),
                    User {
                        enable: true,
                        ..User::default()
                    },
                );
                Ok(())
            })
            .unwrap();
        let hash = AccessStore::hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        access.set_password_hash("alice@pve", hash).unwrap();
        assert!(access.verify_password("alice@pve", "correct horse"));
        assert!(!access.verify_password("alice@pve", "wrong"));
        assert!(!access.verify_password("bob@pve", "correct horse"));

        let again = store(dir.path());
        assert!(again.config().users.contains_key("alice@pve"));
        assert!(again.verify_password("alice@pve", "correct horse"));
        let shadow = std::fs::read_to_string(dir.path().join("priv/shadow.cfg")).unwrap();
        assert!(!shadow.contains("correct horse"));
    }

    #[test]
    fn a_refused_change_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let access = store(dir.path());
        let before = access.config();
        let error = access
            .update(|cfg| {
                cfg.users.clear();
                Err::<(), _>("no".to_owned())
            })
            .unwrap_err();
        assert_eq!(error.to_string(), "no");
        assert_eq!(*access.config(), *before);
        assert!(!dir.path().join("user.cfg").exists());
    }

    #[test]
    fn tokens_have_hashed_secrets_that_go_with_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let access = store(dir.path());
        access
            .update(|cfg| {
                cfg.users.insert(
                    "alice@pve".into(),
                    User {
                        enable: true,
                        ..User::default()
                    },
                );
                Ok(())
            })
            .unwrap();
        let secret = access
            .create_token(
                |cfg| {
                    let user = cfg.users.get_mut("alice@pve").ok_or("no user")?;
                    user.tokens.insert(
                        "ci".into(),
                        Token {
                            privsep: true,
                            ..Token::default()
                        },
                    );
                    Ok(())
                },
                "alice@pve!ci",
            )
            .unwrap();
        assert_eq!(secret.len(), 36);
        assert!(access.verify_token("alice@pve!ci", &secret));
        assert!(!access.verify_token("alice@pve!ci", "x"));
        let stored = std::fs::read_to_string(dir.path().join("priv/token.cfg")).unwrap();
        assert!(stored.starts_with("alice@pve!ci ") && !stored.contains(&secret));
        assert!(store(dir.path()).verify_token("alice@pve!ci", &secret));

        access
            .update(|cfg| {
                cfg.users.remove("alice@pve");
                Ok(())
            })
            .unwrap();
        assert!(!access.verify_token("alice@pve!ci", &secret));
        let stored = std::fs::read_to_string(dir.path().join("priv/token.cfg")).unwrap();
        assert!(stored.is_empty());
    }
}
