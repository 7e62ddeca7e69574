//! `user.cfg`: users, groups, API tokens, pools, custom roles and ACLs, in
//! Proxmox VE's line format.
//!
//! ```text
//! user:alice@pve:1:0:Alice:Smith:alice@example.com:ops%20team::
//! token:alice@pve!ci:0:1:used%20by%20CI:
//! group:ops:alice@pve,bob@pve:operators:
//! pool:prod:production:100,101:local:
//! role:Operator:VM.Audit,VM.PowerMgmt:
//! acl:1:/vms/100:alice@pve,@ops,alice@pve!ci:PVEVMUser:
//! ```
//!
//! Free text (names, comments) is percent-encoded for control and
//! non-ASCII characters and `:`. Secrets are not here: password hashes and
//! token secrets live in `priv/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::ids::{
    is_valid_acl_path, is_valid_group_id, is_valid_pool_id, is_valid_role_id, is_valid_token_id,
    is_valid_user_id, normalize_acl_path,
};
use super::privileges::{builtin_role, privilege};

/// The user that always exists and holds every privilege.
pub const ROOT_USER: &str = "root@pam";

/// One user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// Whether the user may log in.
    pub enable: bool,
    /// Unix time after which the account is unusable; 0 for never.
    pub expire: i64,
    /// First name.
    pub firstname: String,
    /// Last name.
    pub lastname: String,
    /// E-mail address.
    pub email: String,
    /// Free text.
    pub comment: String,
    /// Second-factor keys, kept as text.
    pub keys: String,
    /// API tokens by token name (the part after `!`).
    pub tokens: BTreeMap<String, Token>,
}

/// One API token of a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Token {
    /// Unix time after which the token is unusable; 0 for never.
    pub expire: i64,
    /// Privilege separation: the token only has the privileges its own
    /// ACLs give it, intersected with its user's.
    pub privsep: bool,
    /// Free text.
    pub comment: String,
}

/// One group of users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Free text.
    pub comment: String,
    /// Member user ids.
    pub members: BTreeSet<String>,
}

/// One resource pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    /// Free text.
    pub comment: String,
    /// Member guests.
    pub vms: BTreeSet<u32>,
    /// Member storages.
    pub storage: BTreeSet<String>,
}

/// Who an ACL entry is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// A user, `alice@pve`.
    User(String),
    /// A group, written `@ops`.
    Group(String),
    /// An API token, `alice@pve!ci`.
    Token(String),
}

impl Subject {
    /// Parses `alice@pve`, `@ops` or `alice@pve!ci`.
    pub fn parse(text: &str) -> Option<Subject> {
        if let Some(group) = text.strip_prefix('@') {
            return is_valid_group_id(group).then(|| Subject::Group(group.to_owned()));
        }
        if text.contains('!') {
            return is_valid_token_id(text).then(|| Subject::Token(text.to_owned()));
        }
        is_valid_user_id(text).then(|| Subject::User(text.to_owned()))
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::User(id) | Subject::Token(id) => f.write_str(id),
            Subject::Group(id) => write!(f, "@{id}"),
        }
    }
}

/// The roles given on one ACL path: subject -> role -> propagate.
pub type AclRoles = BTreeMap<Subject, BTreeMap<String, bool>>;

/// The whole of `user.cfg`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserConfig {
    /// Users by user id.
    pub users: BTreeMap<String, User>,
    /// Groups by group id.
    pub groups: BTreeMap<String, Group>,
    /// Custom roles (the built-in ones are not stored) by role id.
    pub roles: BTreeMap<String, BTreeSet<String>>,
    /// Pools by pool id.
    pub pools: BTreeMap<String, Pool>,
    /// ACLs by normalized path.
    pub acl: BTreeMap<String, AclRoles>,
}

/// A line of `user.cfg` that was skipped, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong with it.
    pub reason: String,
}

/// Percent-encodes control and non-ASCII characters and `:`.
pub fn encode_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b':' && byte != b'%' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Undoes [`encode_text`]; malformed escapes are kept as they are.
pub fn decode_text(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', ';', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl UserConfig {
    /// The role's privileges: built-in or custom; `None` if no such role.
    pub fn role_privileges(&self, role: &str) -> Option<BTreeSet<&'static str>> {
        if let Some(builtin) = builtin_role(role) {
            return Some(builtin);
        }
        self.roles
            .get(role)
            .map(|privs| privs.iter().filter_map(|p| privilege(p)).collect())
    }

    /// Whether role `role` exists.
    pub fn role_exists(&self, role: &str) -> bool {
        builtin_role(role).is_some() || self.roles.contains_key(role)
    }

    /// The groups user `user` is a member of.
    pub fn groups_of<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.groups
            .iter()
            .filter(move |(_, group)| group.members.contains(user))
            .map(|(id, _)| id.as_str())
    }

    /// The pool guest `vmid` belongs to.
    pub fn pool_of_vm(&self, vmid: u32) -> Option<&str> {
        self.pools
            .iter()
            .find(|(_, pool)| pool.vms.contains(&vmid))
            .map(|(id, _)| id.as_str())
    }

    /// The pool storage `storage` belongs to.
    pub fn pool_of_storage(&self, storage: &str) -> Option<&str> {
        self.pools
            .iter()
            .find(|(_, pool)| pool.storage.contains(storage))
            .map(|(id, _)| id.as_str())
    }

    /// Removes every ACL entry of `subject`.
    pub fn remove_subject(&mut self, subject: &Subject) {
        for roles in self.acl.values_mut() {
            roles.remove(subject);
        }
        self.acl.retain(|_, roles| !roles.is_empty());
    }

    /// Parses `user.cfg`. Lines that make no sense are skipped and
    /// reported, as Proxmox does, so one bad line does not lock everybody
    /// out. `root@pam` always exists.
    pub fn parse(text: &str) -> (UserConfig, Vec<SkippedLine>) {
        let mut cfg = UserConfig::default();
        let mut skipped = Vec::new();
        // Groups, pools and ACLs refer to users and tokens; read those first.
        let lines: Vec<(usize, Vec<&str>)> = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .map(|(n, line)| (n, line.split(':').map(str::trim).collect()))
            .collect();
        for pass in 0..2 {
            for (line, fields) in &lines {
                let kind = fields.first().copied().unwrap_or("");
                let first_pass = matches!(kind, "user" | "token" | "role");
                if first_pass != (pass == 0) {
                    continue;
                }
                if let Err(reason) = cfg.parse_line(kind, &fields[1..]) {
                    skipped.push(SkippedLine {
                        line: *line,
                        reason,
                    });
                }
            }
        }
        cfg.users
            .entry(ROOT_USER.to_owned())
            .or_insert_with(|| User {
                enable: true,
                ..User::default()
            });
        skipped.sort_by_key(|s| s.line);
        (cfg, skipped)
    }

    fn parse_line(&mut self, kind: &str, f: &[&str]) -> Result<(), String> {
        let field = |i: usize| f.get(i).copied().unwrap_or("");
        let number = |text: &str, what: &str| -> Result<i64, String> {
            if text.is_empty() {
                return Ok(0);
            }
            text.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("{what} `{text}` is not a number"))
        };
        match kind {
            "user" => {
                let id = field(0);
                if !is_valid_user_id(id) {
                    return Err(format!("invalid user id `{id}`"));
                }
                let user = User {
                    enable: field(1) == "1",
                    expire: number(field(2), "expire")?,
                    firstname: decode_text(field(3)),
                    lastname: decode_text(field(4)),
                    email: field(5).to_owned(),
                    comment: decode_text(field(6)),
                    keys: field(7).to_owned(),
                    tokens: BTreeMap::new(),
                };
                self.users.insert(id.to_owned(), user);
            }
            "token" => {
                let id = field(0);
                let Some((user, name)) = id.split_once('!').filter(|_| is_valid_token_id(id))
                else {
                    return Err(format!("invalid token id `{id}`"));
                };
                let token = Token {
                    expire: number(field(1), "expire")?,
                    privsep: field(2) != "0",
                    comment: decode_text(field(3)),
                };
                let Some(owner) = self.users.get_mut(user) else {
                    return Err(format!("token `{id}` of unknown user"));
                };
                owner.tokens.insert(name.to_owned(), token);
            }
            "group" => {
                let id = field(0);
                if !is_valid_group_id(id) {
                    return Err(format!("invalid group id `{id}`"));
                }
                let members = split_list(field(1))
                    .filter(|m| self.users.contains_key(*m))
                    .map(str::to_owned)
                    .collect();
                self.groups.insert(
                    id.to_owned(),
                    Group {
                        comment: decode_text(field(2)),
                        members,
                    },
                );
            }
            "role" => {
                let id = field(0);
                if !is_valid_role_id(id) || builtin_role(id).is_some() {
                    return Err(format!("invalid or built-in role id `{id}`"));
                }
                let privs = split_list(field(1))
                    .filter_map(privilege)
                    .map(str::to_owned)
                    .collect();
                self.roles.insert(id.to_owned(), privs);
            }
            "pool" => {
                let id = field(0);
                if !is_valid_pool_id(id) {
                    return Err(format!("invalid pool id `{id}`"));
                }
                let vms = split_list(field(2))
                    .filter_map(|v| v.parse::<u32>().ok())
                    .collect();
                let storage = split_list(field(3)).map(str::to_owned).collect();
                self.pools.insert(
                    id.to_owned(),
                    Pool {
                        comment: decode_text(field(1)),
                        vms,
                        storage,
                    },
                );
            }
            "acl" => {
                let propagate = field(0) != "0";
                let path = normalize_acl_path(field(1))
                    .filter(|p| is_valid_acl_path(p))
                    .ok_or_else(|| format!("invalid ACL path `{}`", field(1)))?;
                let subjects: Vec<Subject> = split_list(field(2))
                    .filter_map(Subject::parse)
                    .filter(|s| self.subject_exists(s))
                    .collect();
                let roles: Vec<&str> = split_list(field(3))
                    .filter(|r| self.role_exists(r))
                    .collect();
                if subjects.is_empty() || roles.is_empty() {
                    return Err("ACL line with no known subject or role".to_owned());
                }
                let entry = self.acl.entry(path).or_default();
                for subject in subjects {
                    let given = entry.entry(subject).or_default();
                    for role in &roles {
                        given.insert((*role).to_owned(), propagate);
                    }
                }
            }
            other => return Err(format!("unknown entry type `{other}`")),
        }
        Ok(())
    }

    /// Whether the user, group or token exists.
    pub fn subject_exists(&self, subject: &Subject) -> bool {
        match subject {
            Subject::User(id) => self.users.contains_key(id),
            Subject::Group(id) => self.groups.contains_key(id),
            Subject::Token(id) => self.token(id).is_some(),
        }
    }

    /// The token with full id `user@realm!name`.
    pub fn token(&self, token_id: &str) -> Option<&Token> {
        let (user, name) = token_id.split_once('!')?;
        self.users.get(user)?.tokens.get(name)
    }

    /// `user.cfg` as text, in a stable order.
    pub fn write(&self) -> String {
        let mut out = String::new();
        for (id, user) in &self.users {
            let _ = writeln!(
                out,
                "user:{id}:{}:{}:{}:{}:{}:{}:{}:",
                u8::from(user.enable),
                user.expire,
                encode_text(&user.firstname),
                encode_text(&user.lastname),
                encode_text(&user.email),
                encode_text(&user.comment),
                user.keys,
            );
            for (name, token) in &user.tokens {
                let _ = writeln!(
                    out,
                    "token:{id}!{name}:{}:{}:{}:",
                    token.expire,
                    u8::from(token.privsep),
                    encode_text(&token.comment)
                );
            }
        }
        out.push('\n');
        for (id, group) in &self.groups {
            let members: Vec<&str> = group.members.iter().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "group:{id}:{}:{}:",
                members.join(","),
                encode_text(&group.comment)
            );
        }
        out.push('\n');
        for (id, pool) in &self.pools {
            let vms: Vec<String> = pool.vms.iter().map(u32::to_string).collect();
            let storage: Vec<&str> = pool.storage.iter().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "pool:{id}:{}:{}:{}:",
                encode_text(&pool.comment),
                vms.join(","),
                storage.join(",")
            );
        }
        out.push('\n');
        for (id, privs) in &self.roles {
            let privs: Vec<&str> = privs.iter().map(String::as_str).collect();
            let _ = writeln!(out, "role:{id}:{}:", privs.join(","));
        }
        out.push('\n');
        for (path, roles) in &self.acl {
            // One line per (propagate, role list), listing its subjects.
            let mut lines: BTreeMap<(bool, String), Vec<String>> = BTreeMap::new();
            for (subject, given) in roles {
                for propagate in [false, true] {
                    let list: Vec<&str> = given
                        .iter()
                        .filter(|(_, p)| **p == propagate)
                        .map(|(role, _)| role.as_str())
                        .collect();
                    if !list.is_empty() {
                        lines
                            .entry((propagate, list.join(",")))
                            .or_default()
                            .push(subject.to_string());
                    }
                }
            }
            for ((propagate, role_list), subjects) in lines {
                let _ = writeln!(
                    out,
                    "acl:{}:{path}:{}:{role_list}:",
                    u8::from(propagate),
                    subjects.join(",")
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
user:root@pam:1:0:::root@example.com:::
user:alice@pve:1:0:Alice:Smith:alice@example.com:ops%3A%20team::
token:alice@pve!ci:0:1:used by CI:
user:bob@pve:0:1893456000:::::
group:ops:alice@pve,bob@pve,ghost@pve:operators:

pool:prod:production:100,101:local:

role:Operator:VM.Audit,VM.PowerMgmt,Bogus.Priv:

acl:1:/vms/100:alice@pve,@ops,alice@pve!ci:PVEVMUser:
acl:0:/:bob@pve:PVEAuditor,Operator:
acl:1:/storage:nobody@pve:PVEAuditor:
frobnicate:x:
";

    #[test]
    fn parses_every_kind_of_line() {
        let (cfg, skipped) = UserConfig::parse(EXAMPLE);
        let alice = &cfg.users["alice@pve"];
        assert!(alice.enable);
        assert_eq!(alice.comment, "ops: team");
        assert_eq!(alice.lastname, "Smith");
        assert!(alice.tokens["ci"].privsep);
        assert_eq!(cfg.users["bob@pve"].expire, 1_893_456_000);
        assert!(!cfg.users["bob@pve"].enable);
        assert_eq!(
            cfg.groups["ops"].members.iter().collect::<Vec<_>>(),
            ["alice@pve", "bob@pve"]
        );
        assert_eq!(
            cfg.pools["prod"].vms.iter().collect::<Vec<_>>(),
            [&100, &101]
        );
        assert_eq!(
            cfg.roles["Operator"].iter().collect::<Vec<_>>(),
            ["VM.Audit", "VM.PowerMgmt"]
        );
        let vm100 = &cfg.acl["/vms/100"];
        assert!(vm100[&Subject::Group("ops".into())]["PVEVMUser"]);
        assert!(vm100.contains_key(&Subject::Token("alice@pve!ci".into())));
        assert!(!cfg.acl["/"][&Subject::User("bob@pve".into())]["Operator"]);
        assert_eq!(
            skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
            [13, 14],
            "{skipped:?}"
        );
        assert_eq!(cfg.pool_of_vm(101), Some("prod"));
        assert_eq!(cfg.groups_of("bob@pve").collect::<Vec<_>>(), ["ops"]);
    }

    #[test]
    fn writing_and_reading_gives_the_same_config() {
        let (cfg, _) = UserConfig::parse(EXAMPLE);
        let text = cfg.write();
        let (again, skipped) = UserConfig::parse(&text);
        assert!(skipped.is_empty(), "{skipped:?}\n{text}");
        assert_eq!(again, cfg);
        assert_eq!(again.write(), text);
    }

    #[test]
    fn root_always_exists() {
        let (cfg, skipped) = UserConfig::parse("");
        assert!(skipped.is_empty());
        assert!(cfg.users[ROOT_USER].enable);
    }

    #[test]
    fn text_encoding() {
        assert_eq!(encode_text("a:b c\u{e9}%"), "a%3Ab c%C3%A9%25");
        assert_eq!(decode_text("a%3Ab c%C3%A9%25"), "a:b c\u{e9}%");
    }

    #[test]
    fn subjects() {
        assert_eq!(Subject::parse("@ops"), Some(Subject::Group("ops".into())));
        assert_eq!(
            Subject::parse("a@pve!t1"),
            Some(Subject::Token("a@pve!t1".into()))
        );
        assert_eq!(Subject::parse("a@pve"), Some(Subject::User("a@pve".into())));
        assert_eq!(Subject::parse("nope"), None);
        assert_eq!(Subject::parse("@"), None);
    }
}
