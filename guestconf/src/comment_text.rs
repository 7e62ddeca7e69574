//! The percent-encoding Proxmox applies to description text stored as `#`
//! comment lines (and to a few values such as a disk's `serial`).
//!
//! Bytes outside the printable ASCII range, `%` and `:` are written as `%XX`
//! (upper-case hex) of their UTF-8 bytes; everything else is kept as is.

/// Whether Proxmox leaves `byte` alone when encoding comment text.
fn is_kept_byte(byte: u8) -> bool {
    matches!(byte, 0x20..=0x24 | 0x26..=0x39 | 0x3b..=0x7e)
}

/// Encodes one line of description text as it goes after the `#`.
pub fn encode_comment_text(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if is_kept_byte(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` sequences; a `%` not followed by two hex digits stays
/// literal, and bytes that are not UTF-8 become U+FFFD.
pub fn decode_comment_text(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let high = bytes.get(i + 1).copied().and_then(hex_value);
            let low = bytes.get(i + 2).copied().and_then(hex_value);
            if let (Some(high), Some(low)) = (high, low) {
                out.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        out.push(byte);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_plain_text() {
        assert_eq!(
            encode_comment_text("Web server, Debian 12"),
            "Web server, Debian 12"
        );
    }

    #[test]
    fn encodes_percent_colon_and_non_ascii() {
        assert_eq!(encode_comment_text("50% done: ok"), "50%25 done%3A ok");
        assert_eq!(encode_comment_text("Zürich"), "Z%C3%BCrich");
        assert_eq!(encode_comment_text("tab\there"), "tab%09here");
    }

    #[test]
    fn decode_reverses_encode() {
        for text in ["", "a:b%c", "Grüße ✓", "line\twith\rcontrol", "100%"] {
            assert_eq!(decode_comment_text(&encode_comment_text(text)), text);
        }
    }

    #[test]
    fn decode_leaves_stray_percent() {
        assert_eq!(decode_comment_text("100% sure %4"), "100% sure %4");
        assert_eq!(decode_comment_text("%zz%41"), "%zzA");
    }

    #[test]
    fn decode_replaces_invalid_utf8() {
        assert_eq!(decode_comment_text("a%FFb"), "a\u{fffd}b");
    }
}
