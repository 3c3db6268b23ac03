//! The API's input rules, checked before anything reaches the service so that a bad request
//! is answered with its code and stores nothing. The service checks again (it trusts no input
//! node); these are the contract's wording, in one place for the API and the pages.

use crate::error::ApiError;

/// Longest username, in characters.
pub const USERNAME_MAX_CHARS: usize = 32;
/// Shortest password, in bytes.
pub const PASSWORD_MIN_BYTES: usize = 8;
/// Longest password, in bytes (bcrypt ignores what follows).
pub const PASSWORD_MAX_BYTES: usize = 72;
/// Longest message after trimming, in characters.
pub const MESSAGE_MAX_CHARS: usize = 4000;
/// Longest group name after trimming, in characters.
pub const GROUP_NAME_MAX_CHARS: usize = 64;
/// Messages per chat page when the client names no `limit`.
pub const DEFAULT_PAGE: u32 = 50;
/// The largest page; a larger `limit` is treated as this.
pub const MAX_PAGE: u32 = 200;
/// Longest `Idempotency-Key` header, in bytes.
pub const IDEMPOTENCY_KEY_MAX_BYTES: usize = 200;

/// 1 to 32 letters, digits, `_`, `-` and `.`, not all dots (`.` and `..` would read as path
/// steps in a URL).
pub fn username(name: &str) -> Result<(), ApiError> {
    let count = name.chars().count();
    if count == 0 || count > USERNAME_MAX_CHARS {
        return Err(ApiError::invalid(format!(
            "The username must be 1 to {USERNAME_MAX_CHARS} characters long."
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(ApiError::invalid(
            "The username may contain only letters, digits, '_', '-' and '.'.",
        ));
    }
    if name.chars().all(|c| c == '.') {
        return Err(ApiError::invalid("The username cannot be only dots."));
    }
    Ok(())
}

/// 3 to 6 ASCII digits, the whole string; kept as text (`0123` is not `123`).
pub fn tag(tag: &str) -> Result<(), ApiError> {
    if (3..=6).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "The tag must be 3 to 6 digits (for example 0042).",
        ))
    }
}

/// 8 to 72 bytes: bcrypt reads only the first 72.
pub fn password(password: &str) -> Result<(), ApiError> {
    if (PASSWORD_MIN_BYTES..=PASSWORD_MAX_BYTES).contains(&password.len())
        && !password.contains('\0')
    {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "The password must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes long \
             (bcrypt, which stores it, reads no more than {PASSWORD_MAX_BYTES}) and contain no NUL."
        )))
    }
}

fn has_control_chars(text: &str, allow_line_breaks: bool) -> bool {
    text.chars()
        .any(|c| c.is_control() && !(allow_line_breaks && matches!(c, '\n' | '\r' | '\t')))
}

/// 1 to 4,000 characters after trimming, no control characters but line breaks and tabs.
/// Returns the trimmed text, which is what is stored.
pub fn message(content: &str) -> Result<&str, ApiError> {
    let content = content.trim();
    if content.is_empty() {
        return Err(ApiError::invalid("The message is empty."));
    }
    if content.chars().count() > MESSAGE_MAX_CHARS {
        return Err(ApiError::invalid(format!(
            "The message is longer than {MESSAGE_MAX_CHARS} characters."
        )));
    }
    if has_control_chars(content, true) {
        return Err(ApiError::invalid(
            "The message may not contain control characters.",
        ));
    }
    Ok(content)
}

/// 1 to 64 characters after trimming, no control characters. Returns the trimmed name.
pub fn group_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    let count = name.chars().count();
    if count == 0 || count > GROUP_NAME_MAX_CHARS || has_control_chars(name, false) {
        return Err(ApiError::invalid(format!(
            "The group name must be 1 to {GROUP_NAME_MAX_CHARS} characters, without control \
             characters."
        )));
    }
    Ok(name)
}

/// The `limit` query parameter: absent is 50, above 200 is 200, 0 or not a number is refused.
pub fn page_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_PAGE);
    };
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    if !digits || raw.bytes().all(|b| b == b'0') {
        return Err(ApiError::invalid(
            "limit must be a whole number of messages, at least 1.",
        ));
    }
    // Any number of digits is fine: a huge limit is just more than 200.
    Ok(raw
        .parse::<u32>()
        .map_or(MAX_PAGE, |limit| limit.min(MAX_PAGE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for good in ["alice", "a.b-c_d", "Élodie", "x", "a.", "名前"] {
            assert!(username(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "...", "a b", "a#b", "a/b", &"x".repeat(33)] {
            assert!(username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tags_are_whole_digit_strings() {
        for good in ["000", "0123", "123456"] {
            assert!(tag(good).is_ok(), "{good}");
        }
        for bad in ["12", "1234567", "12a", "1234567x", " 123", "١٢٣"] {
            assert!(tag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_bounded_in_bytes() {
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(password(&"é".repeat(36)).is_ok());
        assert!(password(&"é".repeat(37)).is_err());
        let error = password(&"p".repeat(73)).unwrap_err();
        assert!(error.message.contains("72"), "{}", error.message);
    }

    #[test]
    fn messages_are_trimmed_then_bounded() {
        assert_eq!(message("  hi \n").unwrap(), "hi");
        assert!(message(" \n\t ").is_err());
        assert!(message(&format!("  {}  ", "é".repeat(4000))).is_ok());
        assert!(message(&"x".repeat(4001)).is_err());
        assert!(message("bell\u{7}").is_err());
    }

    #[test]
    fn limits_default_and_clamp() {
        assert_eq!(page_limit(None).unwrap(), 50);
        assert_eq!(page_limit(Some("7")).unwrap(), 7);
        assert_eq!(page_limit(Some("201")).unwrap(), 200);
        assert_eq!(page_limit(Some("99999999999999999999")).unwrap(), 200);
        assert!(page_limit(Some("0")).is_err());
        assert!(page_limit(Some("-1")).is_err());
        assert!(page_limit(Some("ten")).is_err());
    }
}
