//! Authentication of API requests by ticket and CSRF prevention token, or
//! by API token.
//!
//! A client presents its ticket in the cookie `PVEAuthCookie` (percent-encoded
//! by most clients) or in the header `Authorization: PVEAuthCookie=<ticket>`.
//! Requests that may change state (anything but GET and HEAD) must also carry
//! the ticket's CSRF prevention token in the header `CSRFPreventionToken`.
//!
//! An API token comes as `Authorization: PVEAPIToken=user@realm!name=secret`
//! and needs no CSRF token. Either way the user must exist, be enabled and
//! not have expired, and so must the token.

use hyper::header::{AUTHORIZATION, COOKIE};
use hyper::{HeaderMap, Method};
use percent_encoding::percent_decode_str;

use crate::access::permissions::user_is_active;
use crate::access::AccessStore;
use crate::response::ApiError;
use crate::ticket::TicketSigner;

/// The name of the cookie (and `Authorization` scheme) that carries a ticket.
pub const TICKET_COOKIE: &str = "PVEAuthCookie";

/// The header that carries the CSRF prevention token.
pub const CSRF_HEADER: &str = "CSRFPreventionToken";

/// The scheme of the `Authorization` header that carries an API token.
pub const API_TOKEN_SCHEME: &str = "PVEAPIToken";

/// Who made an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Whose privileges apply: a user id (`alice@pve`) or a token id
    /// (`alice@pve!ci`).
    pub auth_id: String,
    /// The user: the same as `auth_id`, or the token's owner.
    pub user: String,
}

impl Caller {
    /// A caller logged in as `user`.
    pub fn user(user: impl Into<String>) -> Caller {
        let user = user.into();
        Caller {
            auth_id: user.clone(),
            user,
        }
    }

    /// Whether the caller is an API token.
    pub fn is_token(&self) -> bool {
        self.auth_id != self.user
    }
}

/// Why a request was not authenticated; the display text is the reason
/// phrase of the 401 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither the cookie nor the `Authorization` header carries a ticket.
    #[error("No ticket")]
    NoTicket,
    /// The ticket is malformed, forged or expired.
    #[error("invalid ticket")]
    InvalidTicket,
    /// A state-changing request lacks a valid CSRF prevention token.
    #[error("invalid CSRF prevention token")]
    InvalidCsrfToken,
    /// The API token is unknown, expired, or its secret is wrong.
    #[error("invalid token value")]
    InvalidApiToken,
    /// The user does not exist any more, is disabled or has expired.
    #[error("user account is disabled or expired")]
    InactiveUser,
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        ApiError::unauthorized(error.to_string())
    }
}

/// The value of cookie `name` in a `Cookie` header value, percent-decoded.
pub fn find_cookie(cookie_header: &str, name: &str) -> Option<String> {
    cookie_header.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if key.trim() != name {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Some(percent_decode_str(value).decode_utf8_lossy().into_owned())
    })
}

/// The ticket a request presents, from its cookie or `Authorization` header.
pub fn ticket_from_headers(headers: &HeaderMap) -> Option<String> {
    let from_cookie = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| find_cookie(value, TICKET_COOKIE))
        .filter(|ticket| !ticket.is_empty());
    if from_cookie.is_some() {
        return from_cookie;
    }
    headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let (scheme, ticket) = value.trim().split_once('=')?;
            if scheme.trim() != TICKET_COOKIE {
                return None;
            }
            let ticket = percent_decode_str(ticket.trim())
                .decode_utf8_lossy()
                .into_owned();
            (!ticket.is_empty()).then_some(ticket)
        })
}

/// The token id and secret of an `Authorization: PVEAPIToken=…` header.
pub fn api_token_from_headers(headers: &HeaderMap) -> Option<(String, String)> {
    headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let rest = value.trim().strip_prefix(API_TOKEN_SCHEME)?;
            let rest = rest.trim_start().strip_prefix('=')?.trim();
            // user@realm!name=secret (some clients use ':' before the secret)
            let bang = rest.find('!')?;
            let split = bang + rest[bang..].find(['=', ':'])?;
            let (id, secret) = (&rest[..split], rest[split + 1..].trim());
            (!secret.is_empty()).then(|| (id.trim().to_owned(), secret.to_owned()))
        })
}

/// Authenticates a request by API token or ticket at unix time `now`,
/// against the current users and tokens.
pub fn authenticate_request(
    signer: &TicketSigner,
    access: &AccessStore,
    method: &Method,
    headers: &HeaderMap,
    now: i64,
) -> Result<Caller, AuthError> {
    let cfg = access.config();
    if let Some((token_id, secret)) = api_token_from_headers(headers) {
        let (user, _) = token_id.split_once('!').ok_or(AuthError::InvalidApiToken)?;
        let token = cfg.token(&token_id).ok_or(AuthError::InvalidApiToken)?;
        if (token.expire != 0 && token.expire <= now) || !access.verify_token(&token_id, &secret) {
            return Err(AuthError::InvalidApiToken);
        }
        if !user_is_active(&cfg, user, now) {
            return Err(AuthError::InactiveUser);
        }
        return Ok(Caller {
            auth_id: token_id.clone(),
            user: user.to_owned(),
        });
    }
    let user = authenticate(signer, method, headers, now)?;
    if !user_is_active(&cfg, &user, now) {
        return Err(AuthError::InactiveUser);
    }
    Ok(Caller::user(user))
}

/// Whether requests with `method` need a CSRF prevention token.
pub fn needs_csrf_token(method: &Method) -> bool {
    !(method == Method::GET || method == Method::HEAD)
}

/// Authenticates a request by its ticket (and CSRF token) at unix time
/// `now`; returns the ticket's user id.
pub fn authenticate(
    signer: &TicketSigner,
    method: &Method,
    headers: &HeaderMap,
    now: i64,
) -> Result<String, AuthError> {
    let ticket = ticket_from_headers(headers).ok_or(AuthError::NoTicket)?;
    let user = signer
        .verify_ticket(&ticket, now)
        .map_err(|_| AuthError::InvalidTicket)?;
    if needs_csrf_token(method) {
        let token = headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .ok_or(AuthError::InvalidCsrfToken)?;
        signer
            .verify_csrf_token(token.trim(), &user, now)
            .map_err(|_| AuthError::InvalidCsrfToken)?;
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    const KEY: [u8; 32] = [3; 32];
    const NOW: i64 = 1_700_000_000;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn cookie_is_found_among_others() {
        let header = "lang=en; PVEAuthCookie=PVE%3Aroot%40pam%3A6553F100%3A%3Aab+c%2Fd%3D; x=y";
        assert_eq!(
            find_cookie(header, TICKET_COOKIE).as_deref(),
            Some("PVE:root@pam:6553F100::ab+c/d=")
        );
        assert_eq!(find_cookie(header, "lang").as_deref(), Some("en"));
        assert_eq!(find_cookie(header, "missing"), None);
    }

    #[test]
    fn cookie_value_may_be_plain_or_quoted() {
        assert_eq!(
            find_cookie("PVEAuthCookie=PVE:root@pam:6553F100::abc=", TICKET_COOKIE).as_deref(),
            Some("PVE:root@pam:6553F100::abc=")
        );
        assert_eq!(
            find_cookie("PVEAuthCookie=\"a%3Ab\"", TICKET_COOKIE).as_deref(),
            Some("a:b")
        );
        // A cookie whose name merely ends in the wanted name is a different cookie.
        assert_eq!(find_cookie("XPVEAuthCookie=a", TICKET_COOKIE), None);
        assert_eq!(find_cookie("", TICKET_COOKIE), None);
        assert_eq!(find_cookie("garbage", TICKET_COOKIE), None);
    }

    #[test]
    fn ticket_from_cookie_or_authorization_header() {
        let h = headers(&[("cookie", "PVEAuthCookie=PVE%3Aroot%40pam%3AX")]);
        assert_eq!(ticket_from_headers(&h).as_deref(), Some("PVE:root@pam:X"));
        let h = headers(&[("authorization", "PVEAuthCookie=PVE:root@pam:Y")]);
        assert_eq!(ticket_from_headers(&h).as_deref(), Some("PVE:root@pam:Y"));
        let h = headers(&[("authorization", "Bearer abc")]);
        assert_eq!(ticket_from_headers(&h), None);
        let h = headers(&[("cookie", "a=b"), ("cookie", "PVEAuthCookie=Z")]);
        assert_eq!(ticket_from_headers(&h).as_deref(), Some("Z"));
        assert_eq!(ticket_from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn get_needs_ticket_only() {
        let signer = TicketSigner::new(&KEY);
        let ticket = signer.issue_ticket("root@pam", NOW);
        let h = headers(&[("cookie", &format!("PVEAuthCookie={ticket}"))]);
        assert_eq!(
            authenticate(&signer, &Method::GET, &h, NOW).unwrap(),
            "root@pam"
        );
        assert_eq!(
            authenticate(&signer, &Method::GET, &HeaderMap::new(), NOW),
            Err(AuthError::NoTicket)
        );
        assert_eq!(
            authenticate(&signer, &Method::GET, &h, NOW + 3 * 60 * 60),
            Err(AuthError::InvalidTicket)
        );
        let other = TicketSigner::new(&[4; 32]);
        assert_eq!(
            authenticate(&other, &Method::GET, &h, NOW),
            Err(AuthError::InvalidTicket)
        );
    }

    #[test]
    fn post_needs_matching_csrf_token() {
        let signer = TicketSigner::new(&KEY);
        let ticket = signer.issue_ticket("root@pam", NOW);
        let cookie = format!("PVEAuthCookie={ticket}");
        let h = headers(&[("cookie", &cookie)]);
        assert_eq!(
            authenticate(&signer, &Method::POST, &h, NOW),
            Err(AuthError::InvalidCsrfToken)
        );
        let wrong_user = signer.issue_csrf_token("alice@pve", NOW);
        let h = headers(&[("cookie", &cookie), (CSRF_HEADER, &wrong_user)]);
        assert_eq!(
            authenticate(&signer, &Method::PUT, &h, NOW),
            Err(AuthError::InvalidCsrfToken)
        );
        let token = signer.issue_csrf_token("root@pam", NOW);
        let h = headers(&[("cookie", &cookie), (CSRF_HEADER, &token)]);
        assert!(authenticate(&signer, &Method::DELETE, &h, NOW).is_ok());
    }

    #[test]
    fn api_token_headers() {
        let h = headers(&[("authorization", "PVEAPIToken=alice@pve!ci=0f3c-11")]);
        assert_eq!(
            api_token_from_headers(&h),
            Some(("alice@pve!ci".into(), "0f3c-11".into()))
        );
        let h = headers(&[("authorization", "PVEAPIToken = a@pve!t:s3cret")]);
        assert_eq!(
            api_token_from_headers(&h),
            Some(("a@pve!t".into(), "s3cret".into()))
        );
        for bad in [
            "PVEAPIToken=a@pve!t=",
            "PVEAPIToken=a@pve=x",
            "Bearer x",
            "PVEAPIToken",
        ] {
            let h = headers(&[("authorization", bad)]);
            assert_eq!(api_token_from_headers(&h), None, "{bad}");
        }
    }

    #[test]
    fn tokens_and_tickets_against_the_access_store() {
        use crate::access::user_cfg::{Token, User};
        let dir = tempfile::tempdir().unwrap();
        let state = crate::state_dir::StateDir::new(dir.path());
        state.prepare().unwrap();
        let access = AccessStore::load(&state).unwrap();
        access
            .update(|cfg| {
                let mut alice = User {
                    enable: true,
                    ..User::default()
                };
                alice.tokens.insert(
                    "old".into(),
                    Token {
                        expire: NOW - 1,
                        ..Token::default()
                    },
                );
                cfg.users.insert("alice@pve".into(), alice);
                cfg.users.insert("off@pve".into(), User::default());
                Ok(())
            })
            .unwrap();
        let secret = access
            .create_token(
                |cfg| {
                    let alice = cfg.users.get_mut("alice@pve").ok_or("x")?;
                    alice.tokens.insert("ci".into(), Token::default());
                    Ok(())
                },
                "alice@pve!ci",
            )
            .unwrap();
        let signer = TicketSigner::new(&KEY);
        let auth = |h: &HeaderMap, m: &Method| authenticate_request(&signer, &access, m, h, NOW);

        let h = headers(&[(
            "authorization",
            &format!("PVEAPIToken=alice@pve!ci={secret}"),
        )]);
        let caller = auth(&h, &Method::POST).unwrap();
        assert_eq!(caller.auth_id, "alice@pve!ci");
        assert_eq!(caller.user, "alice@pve");
        assert!(caller.is_token());
        let h = headers(&[("authorization", "PVEAPIToken=alice@pve!ci=wrong")]);
        assert_eq!(auth(&h, &Method::GET), Err(AuthError::InvalidApiToken));
        let h = headers(&[(
            "authorization",
            &format!("PVEAPIToken=alice@pve!old={secret}"),
        )]);
        assert_eq!(auth(&h, &Method::GET), Err(AuthError::InvalidApiToken));

        let ticket = signer.issue_ticket("off@pve", NOW);
        let h = headers(&[("cookie", &format!("PVEAuthCookie={ticket}"))]);
        assert_eq!(auth(&h, &Method::GET), Err(AuthError::InactiveUser));
        let ticket = signer.issue_ticket("alice@pve", NOW);
        let h = headers(&[("cookie", &format!("PVEAuthCookie={ticket}"))]);
        assert_eq!(auth(&h, &Method::GET).unwrap(), Caller::user("alice@pve"));
    }

    #[test]
    fn auth_errors_become_401_with_reason() {
        let error = ApiError::from(AuthError::NoTicket);
        assert_eq!(error.status, hyper::StatusCode::UNAUTHORIZED);
        assert_eq!(error.message, "No ticket");
    }
}
