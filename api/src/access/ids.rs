//! The spelling of user, token, group, role and pool ids and ACL paths.

/// The longest user id.
const MAX_USER_ID_LEN: usize = 64;

fn is_realm(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && text.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// `name@realm`: a name without white space, `:`, `/` or `!`, and a realm
/// of letters, digits, `.-_` starting with a letter.
pub fn is_valid_user_id(text: &str) -> bool {
    let Some((name, realm)) = text.rsplit_once('@') else {
        return false;
    };
    text.len() <= MAX_USER_ID_LEN
        && !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '/' | '!'))
        && is_realm(realm)
}

/// The realm of a user id.
pub fn realm_of(user_id: &str) -> &str {
    user_id.rsplit_once('@').map_or("", |(_, realm)| realm)
}

/// A token's own name: a letter, then letters, digits and `.-_`.
pub fn is_valid_token_name(text: &str) -> bool {
    is_realm(text)
}

/// `name@realm!tokenname`.
pub fn is_valid_token_id(text: &str) -> bool {
    text.split_once('!')
        .is_some_and(|(user, name)| is_valid_user_id(user) && is_valid_token_name(name))
}

fn is_simple_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Group ids: letters, digits and `.-_`.
pub fn is_valid_group_id(text: &str) -> bool {
    is_simple_id(text)
}

/// Role ids: letters, digits and `.-_`.
pub fn is_valid_role_id(text: &str) -> bool {
    is_simple_id(text)
}

/// Pool ids: letters, digits and `.-_`.
pub fn is_valid_pool_id(text: &str) -> bool {
    is_simple_id(text)
}

/// An ACL path in its normal form: one leading `/`, no empty segments and
/// no trailing `/`; `None` if it has characters ACL paths cannot have.
pub fn normalize_acl_path(text: &str) -> Option<String> {
    let segments: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
    let path = format!("/{}", segments.join("/"));
    is_valid_acl_path(&path).then_some(path)
}

/// Letters, digits and `.-_/`, starting with `/`.
pub fn is_valid_acl_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 256
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        && !path.split('/').any(|s| s == ".." || s == ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        for good in ["root@pam", "alice@pve", "j.doe@ldap-1", "a@b@pve"] {
            assert!(is_valid_user_id(good), "{good}");
        }
        for bad in [
            "root", "@pve", "root@", "root@p", "a b@pve", "a:b@pve", "a/b@pve", "a!b@pve", "a@1pve",
        ] {
            assert!(!is_valid_user_id(bad), "{bad}");
        }
        assert!(!is_valid_user_id(&format!("{}@pve", "a".repeat(61))));
        assert_eq!(realm_of("alice@pve"), "pve");
    }

    #[test]
    fn token_ids() {
        assert!(is_valid_token_id("alice@pve!ci"));
        assert!(is_valid_token_id("root@pam!tf-1.x"));
        assert!(!is_valid_token_id("alice@pve!"));
        assert!(!is_valid_token_id("alice@pve!1x"));
        assert!(!is_valid_token_id("alice!ci"));
        assert!(!is_valid_token_id("alice@pve!c i"));
    }

    #[test]
    fn acl_paths() {
        assert_eq!(normalize_acl_path("/").as_deref(), Some("/"));
        assert_eq!(normalize_acl_path("").as_deref(), Some("/"));
        assert_eq!(normalize_acl_path("vms//100/").as_deref(), Some("/vms/100"));
        assert_eq!(normalize_acl_path("/vms/../x"), None);
        assert_eq!(normalize_acl_path("/vms/1 0"), None);
        assert!(is_valid_acl_path("/storage/local"));
    }

    #[test]
    fn simple_ids() {
        assert!(is_valid_group_id("ops-team_1.x"));
        assert!(!is_valid_group_id("ops team"));
        assert!(!is_valid_pool_id(""));
        assert!(!is_valid_role_id("a:b"));
    }
}
