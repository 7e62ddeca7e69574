//! Authentication tickets and CSRF prevention tokens in Proxmox VE's shape.
//!
//! A ticket reads `PVE:<user>:<HEXTIME>::<SIGNATURE>`, where `HEXTIME` is the
//! issue time as eight upper-case hex digits of the unix time and `SIGNATURE`
//! is the standard base64 of HMAC-SHA256 over `PVE:<user>:<HEXTIME>`, keyed
//! with the node's ticket signing key.
//!
//! A CSRF prevention token reads `<HEXTIME>:<SIGNATURE>`, the signature being
//! HMAC-SHA256 over `<HEXTIME>:<user>` in base64 without padding.
//!
//! Both are valid for two hours after their issue time and are accepted up to
//! five minutes before it, to tolerate clock skew between cluster nodes.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use ring::hmac;

/// How long a ticket or CSRF token stays valid after its issue time, in seconds.
pub const TICKET_LIFETIME_SECS: i64 = 2 * 60 * 60;

/// How far in the future an issue time may lie, in seconds.
pub const ALLOWED_CLOCK_SKEW_SECS: i64 = 5 * 60;

/// The length of a ticket signing key in bytes.
pub const SIGNING_KEY_LEN: usize = 32;

const TICKET_PREFIX: &str = "PVE";

/// Standard base64 that writes padding and accepts it or its absence.
const BASE64_SIGNATURE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a ticket or a CSRF token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// The string does not have the expected shape.
    #[error("malformed")]
    Malformed,
    /// The signature does not match the content.
    #[error("bad signature")]
    BadSignature,
    /// The issue time lies more than the lifetime in the past.
    #[error("expired")]
    Expired,
    /// The issue time lies further in the future than the allowed skew.
    #[error("issued in the future")]
    IssuedInFuture,
}

/// Signs and verifies tickets and CSRF tokens with the node's secret key.
pub struct TicketSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSigner { .. }")
    }
}

impl TicketSigner {
    /// A signer for the given secret key.
    pub fn new(secret: &[u8; SIGNING_KEY_LEN]) -> Self {
        TicketSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Issues a ticket for `user` at unix time `now`.
    pub fn issue_ticket(&self, user: &str, now: i64) -> String {
        let signed_part = format!("{TICKET_PREFIX}:{user}:{}", format_hex_time(now));
        let tag = hmac::sign(&self.key, signed_part.as_bytes());
        format!("{signed_part}::{}", BASE64_SIGNATURE.encode(tag.as_ref()))
    }

    /// Checks a ticket at unix time `now` and returns the user it was issued to.
    pub fn verify_ticket(&self, ticket: &str, now: i64) -> Result<String, TicketError> {
        let (signed_part, signature) = ticket.split_once("::").ok_or(TicketError::Malformed)?;
        let rest = signed_part
            .strip_prefix(TICKET_PREFIX)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or(TicketError::Malformed)?;
        let (user, hex_time) = rest.rsplit_once(':').ok_or(TicketError::Malformed)?;
        if !is_valid_user_id(user) {
            return Err(TicketError::Malformed);
        }
        let issued = parse_hex_time(hex_time).ok_or(TicketError::Malformed)?;
        let signature = decode_signature(signature)?;
        hmac::verify(&self.key, signed_part.as_bytes(), &signature)
            .map_err(|_| TicketError::BadSignature)?;
        check_age(issued, now)?;
        Ok(user.to_owned())
    }

    /// Issues a CSRF prevention token for `user` at unix time `now`.
    pub fn issue_csrf_token(&self, user: &str, now: i64) -> String {
        let hex_time = format_hex_time(now);
        let tag = hmac::sign(&self.key, format!("{hex_time}:{user}").as_bytes());
        let signature = BASE64_SIGNATURE.encode(tag.as_ref());
        format!("{hex_time}:{}", signature.trim_end_matches('='))
    }

    /// Checks that `token` is a CSRF prevention token of `user` valid at `now`.
    pub fn verify_csrf_token(&self, token: &str, user: &str, now: i64) -> Result<(), TicketError> {
        let (hex_time, signature) = token.split_once(':').ok_or(TicketError::Malformed)?;
        let issued = parse_hex_time(hex_time).ok_or(TicketError::Malformed)?;
        let signature = decode_signature(signature)?;
        hmac::verify(
            &self.key,
            format!("{hex_time}:{user}").as_bytes(),
            &signature,
        )
        .map_err(|_| TicketError::BadSignature)?;
        check_age(issued, now)
    }
}

/// Whether `text` looks like a ticket (and not like a password).
pub fn looks_like_ticket(text: &str) -> bool {
    text.starts_with("PVE:") && text.contains("::")
}

/// Whether `user` is a `name@realm` user id without separators that would
/// make a ticket ambiguous.
pub fn is_valid_user_id(user: &str) -> bool {
    let Some((name, realm)) = user.split_once('@') else {
        return false;
    };
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && !name
            .chars()
            .any(|c| c == ':' || c == '@' || c.is_whitespace() || c.is_control());
    let realm_ok = !realm.is_empty()
        && realm.len() <= 32
        && realm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    name_ok && realm_ok
}

fn format_hex_time(now: i64) -> String {
    // Proxmox writes the time as at least eight hex digits; times before
    // 1970 or after 2106 do not occur on a running node.
    format!("{:08X}", now.clamp(0, i64::from(u32::MAX)))
}

fn parse_hex_time(text: &str) -> Option<i64> {
    if text.len() != 8
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(text, 16).ok().map(i64::from)
}

fn decode_signature(text: &str) -> Result<Vec<u8>, TicketError> {
    if text.is_empty() {
        return Err(TicketError::Malformed);
    }
    BASE64_SIGNATURE
        .decode(text)
        .map_err(|_| TicketError::Malformed)
}

fn check_age(issued: i64, now: i64) -> Result<(), TicketError> {
    let age = now - issued;
    if age < -ALLOWED_CLOCK_SKEW_SECS {
        Err(TicketError::IssuedInFuture)
    } else if age > TICKET_LIFETIME_SECS {
        Err(TicketError::Expired)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; SIGNING_KEY_LEN] = [7; SIGNING_KEY_LEN];
    const OTHER_KEY: [u8; SIGNING_KEY_LEN] = [8; SIGNING_KEY_LEN];
    const NOW: i64 = 1_700_000_000;

    fn is_ticket_shaped(ticket: &str) -> bool {
        let Some(rest) = ticket.strip_prefix("PVE:root@pam:") else {
            return false;
        };
        let (hex, sig) = rest.split_at(8);
        let Some(sig) = sig.strip_prefix("::") else {
            return false;
        };
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            && sig.len() == 44
            && sig
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    }

    #[test]
    fn ticket_has_proxmox_shape() {
        let signer = TicketSigner::new(&KEY);
        let ticket = signer.issue_ticket("root@pam", NOW);
        assert!(ticket.starts_with("PVE:root@pam:6553F100::"), "{ticket}");
        assert!(is_ticket_shaped(&ticket), "{ticket}");
        assert!(looks_like_ticket(&ticket));
    }

    #[test]
    fn ticket_signature_is_hmac_sha256_of_the_signed_part() {
        let signer = TicketSigner::new(&KEY);
        let ticket = signer.issue_ticket("root@pam", NOW);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &KEY);
        let expected = hmac::sign(&key, b"PVE:root@pam:6553F100");
        let (_, sig) = ticket.split_once("::").unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(sig)
                .unwrap(),
            expected.as_ref()
        );
    }

    #[test]
    fn ticket_round_trips_within_lifetime() {
        let signer = TicketSigner::new(&KEY);
        let ticket = signer.issue_ticket("root@pam", NOW);
        assert_eq!(signer.verify_ticket(&ticket, NOW).unwrap(), "root@pam");
        assert_eq!(
            signer
                .verify_ticket(&ticket, NOW + TICKET_LIFETIME_SECS)
                .unwrap(),
            "root@pam"
        );
        // Issued up to five minutes "in the future" is tolerated.
        assert!(signer
            .verify_ticket(&ticket, NOW - ALLOWED_CLOCK_SKEW_SECS)
            .is_ok());
    }

    #[test]
    fn ticket_expires() {
        let signer = TicketSigner::new(&KEY);
        let ticket = signer.issue_ticket("root@pam", NOW);
        assert_eq!(
            signer.verify_ticket(&ticket, NOW + TICKET_LIFETIME_SECS + 1),
            Err(TicketError::Expired)
        );
        assert_eq!(
            signer.verify_ticket(&ticket, NOW - ALLOWED_CLOCK_SKEW_SECS - 1),
            Err(TicketError::IssuedInFuture)
        );
    }

    #[test]
    fn ticket_from_another_key_is_refused() {
        let ticket = TicketSigner::new(&OTHER_KEY).issue_ticket("root@pam", NOW);
        assert_eq!(
            TicketSigner::new(&KEY).verify_ticket(&ticket, NOW),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn tampered_ticket_is_refused() {
        let signer = TicketSigner::new(&KEY);
        let ticket = signer.issue_ticket("root@pam", NOW);
        let other_user = ticket.replace("root@pam", "admin@pam");
        assert_eq!(
            signer.verify_ticket(&other_user, NOW),
            Err(TicketError::BadSignature)
        );
        let other_time = ticket.replace("6553F100", "6553F200");
        assert_eq!(
            signer.verify_ticket(&other_time, NOW),
            Err(TicketError::BadSignature)
        );
        let mut flipped = ticket.clone().into_bytes();
        let last_sig_char = flipped.len() - 2;
        flipped[last_sig_char] = if flipped[last_sig_char] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(signer.verify_ticket(&flipped, NOW).is_err());
    }

    #[test]
    fn malformed_tickets_are_refused() {
        let signer = TicketSigner::new(&KEY);
        let good = signer.issue_ticket("root@pam", NOW);
        let sig = good.split_once("::").unwrap().1;
        let cases = [
            String::new(),
            "PVE".to_owned(),
            "PVE:root@pam".to_owned(),
            "PVE:root@pam:6553F100".to_owned(),
            "PVE:root@pam:6553F100::".to_owned(),
            format!("XYZ:root@pam:6553F100::{sig}"),
            format!("PVE:root@pam:6553f100::{sig}"),
            format!("PVE:root@pam:6553F10::{sig}"),
            format!("PVE:root@pam:06553F100::{sig}"),
            format!("PVE:root:6553F100::{sig}"),
            format!("PVE::6553F100::{sig}"),
            format!("PVE:root@pam:6553F100::{sig}!"),
            "PVE:root@pam:6553F100::not base64".to_owned(),
        ];
        for case in &cases {
            assert_eq!(
                signer.verify_ticket(case, NOW),
                Err(TicketError::Malformed),
                "{case}"
            );
        }
    }

    #[test]
    fn ticket_signature_without_padding_is_accepted() {
        let signer = TicketSigner::new(&KEY);
        let ticket = signer.issue_ticket("root@pam", NOW);
        let unpadded = ticket.trim_end_matches('=');
        assert_ne!(unpadded, ticket);
        assert_eq!(signer.verify_ticket(unpadded, NOW).unwrap(), "root@pam");
    }

    #[test]
    fn csrf_token_round_trips() {
        let signer = TicketSigner::new(&KEY);
        let token = signer.issue_csrf_token("root@pam", NOW);
        assert!(token.starts_with("6553F100:"), "{token}");
        assert!(!token.ends_with('='));
        let key = hmac::Key::new(hmac::HMAC_SHA256, &KEY);
        let expected = hmac::sign(&key, b"6553F100:root@pam");
        assert_eq!(
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(token.split_once(':').unwrap().1)
                .unwrap(),
            expected.as_ref()
        );
        assert!(signer.verify_csrf_token(&token, "root@pam", NOW).is_ok());
        assert!(signer
            .verify_csrf_token(&token, "root@pam", NOW + TICKET_LIFETIME_SECS)
            .is_ok());
    }

    #[test]
    fn csrf_token_is_bound_to_user_key_and_time() {
        let signer = TicketSigner::new(&KEY);
        let token = signer.issue_csrf_token("root@pam", NOW);
        assert_eq!(
            signer.verify_csrf_token(&token, "admin@pam", NOW),
            Err(TicketError::BadSignature)
        );
        assert_eq!(
            TicketSigner::new(&OTHER_KEY).verify_csrf_token(&token, "root@pam", NOW),
            Err(TicketError::BadSignature)
        );
        assert_eq!(
            signer.verify_csrf_token(&token, "root@pam", NOW + TICKET_LIFETIME_SECS + 1),
            Err(TicketError::Expired)
        );
        let moved = token.replace("6553F100", "6553F101");
        assert_eq!(
            signer.verify_csrf_token(&moved, "root@pam", NOW),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn malformed_csrf_tokens_are_refused() {
        let signer = TicketSigner::new(&KEY);
        for case in [
            "",
            "6553F100",
            "6553F100:",
            "zzzzzzzz:abcd",
            ":abcd",
            "6553F100:a b",
        ] {
            assert_eq!(
                signer.verify_csrf_token(case, "root@pam", NOW),
                Err(TicketError::Malformed),
                "{case:?}"
            );
        }
    }

    #[test]
    fn user_ids() {
        assert!(is_valid_user_id("root@pam"));
        assert!(is_valid_user_id("alice@pve"));
        assert!(!is_valid_user_id("root"));
        assert!(!is_valid_user_id("@pam"));
        assert!(!is_valid_user_id("root@"));
        assert!(!is_valid_user_id("ro:ot@pam"));
        assert!(!is_valid_user_id("root@pa:m"));
        assert!(!is_valid_user_id("a@b@c"));
    }
}
