//! Input rules, in one place. Each check returns the value to store (normalised where the rule
//! says so) or an [`ServiceError::InvalidInput`] saying what is wrong.

use chat_store::Page;

use crate::error::ServiceError;

/// Longest username, in characters.
pub const USERNAME_MAX_CHARS: usize = 32;
/// Shortest password, in bytes.
pub const PASSWORD_MIN_BYTES: usize = 8;
/// Longest password, in bytes: bcrypt ignores everything after 72 bytes, so a longer password
/// would be silently weaker than it looks.
pub const PASSWORD_MAX_BYTES: usize = 72;
/// Longest group name, in characters.
pub const GROUP_NAME_MAX_CHARS: usize = 64;
/// Longest message, in characters.
pub const MESSAGE_MAX_CHARS: usize = 4096;
/// Largest page of messages one read returns.
pub const PAGE_MAX: u32 = 500;
/// Most users one search returns.
pub const SEARCH_MAX: u32 = 50;

/// Letters and digits of any script, plus `_`, `-` and `.`: nothing that needs escaping in a
/// URL path segment or could be confused with the `#` separator.
pub fn username(name: &str) -> Result<(), ServiceError> {
    let count = name.chars().count();
    if count == 0 || count > USERNAME_MAX_CHARS {
        return Err(ServiceError::invalid(format!(
            "The username must be 1 to {USERNAME_MAX_CHARS} characters long."
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(ServiceError::invalid(
            "The username may contain only letters, digits, '_', '-' and '.'.",
        ));
    }
    Ok(())
}

/// 3 to 6 ASCII digits, the whole string (the prototype's check had no end anchor).
pub fn tag(tag: &str) -> Result<(), ServiceError> {
    if (3..=6).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "The tag is not valid: it must be a sequence of 3 to 6 digits.",
        ))
    }
}

/// 8 to 72 bytes, no NUL (C bcrypt implementations stop at it).
pub fn password(password: &str) -> Result<(), ServiceError> {
    if !(PASSWORD_MIN_BYTES..=PASSWORD_MAX_BYTES).contains(&password.len()) {
        return Err(ServiceError::invalid(format!(
            "The password must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes long."
        )));
    }
    if password.contains('\0') {
        return Err(ServiceError::invalid(
            "The password may not contain NUL characters.",
        ));
    }
    Ok(())
}

fn has_control_chars(text: &str, allow_line_breaks: bool) -> bool {
    text.chars()
        .any(|c| c.is_control() && !(allow_line_breaks && matches!(c, '\n' | '\r' | '\t')))
}

/// Trimmed, 1 to 64 characters, no control characters. Returns the trimmed name.
pub fn group_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    let count = name.chars().count();
    if count == 0 || count > GROUP_NAME_MAX_CHARS {
        return Err(ServiceError::invalid(format!(
            "The group name must be 1 to {GROUP_NAME_MAX_CHARS} characters long."
        )));
    }
    if has_control_chars(name, false) {
        return Err(ServiceError::invalid(
            "The group name may not contain control characters.",
        ));
    }
    Ok(name.to_owned())
}

/// 1 to 4096 characters, not only whitespace, no control characters except line breaks and
/// tabs. Stored as sent (not trimmed), so a message reads as it was written.
pub fn message_content(content: &str) -> Result<(), ServiceError> {
    if content.trim().is_empty() {
        return Err(ServiceError::invalid("The message is empty."));
    }
    if content.chars().count() > MESSAGE_MAX_CHARS {
        return Err(ServiceError::invalid(format!(
            "The message is longer than {MESSAGE_MAX_CHARS} characters."
        )));
    }
    if has_control_chars(content, true) {
        return Err(ServiceError::invalid(
            "The message may not contain control characters.",
        ));
    }
    Ok(())
}

/// A page of 1 to 500 messages.
pub fn page(page: Page) -> Result<(), ServiceError> {
    if (1..=PAGE_MAX).contains(&page.limit()) {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!(
            "A page holds 1 to {PAGE_MAX} messages."
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_three_to_six_digits_checked_whole() {
        for good in ["123", "000000", "4567"] {
            assert_eq!(tag(good), Ok(()), "{good}");
        }
        for bad in [
            "12", "1234567", "1234567x", "12a", "", " 123", "١٢٣", "123\n",
        ] {
            assert!(tag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usernames_allow_letters_digits_and_three_marks() {
        for good in ["alice", "Élodie_2", "a.b-c", "名前"] {
            assert_eq!(username(good), Ok(()), "{good}");
        }
        let long = "x".repeat(USERNAME_MAX_CHARS + 1);
        for bad in [
            "",
            "a b",
            "a#b",
            "a/b",
            "x'; DROP TABLE users; --",
            long.as_str(),
        ] {
            assert!(username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_eight_to_seventy_two_bytes_without_nul() {
        assert!(password("1234567").is_err());
        assert_eq!(password("12345678"), Ok(()));
        assert_eq!(password(&"p".repeat(72)), Ok(()));
        assert!(password(&"p".repeat(73)).is_err());
        assert!(password("1234\u{0}5678").is_err());
    }

    #[test]
    fn messages_are_one_to_4096_characters_of_text() {
        assert!(message_content("").is_err());
        assert!(message_content(" \n\t").is_err());
        assert_eq!(message_content("line one\nline two\ttab"), Ok(()));
        assert_eq!(message_content(&"é".repeat(MESSAGE_MAX_CHARS)), Ok(()));
        assert!(message_content(&"x".repeat(10_000)).is_err());
        assert!(message_content("bell\u{7}").is_err());
    }

    #[test]
    fn group_names_are_trimmed_and_bounded() {
        assert_eq!(group_name("  friends "), Ok("friends".to_owned()));
        assert!(group_name("   ").is_err());
        assert!(group_name(&"g".repeat(GROUP_NAME_MAX_CHARS + 1)).is_err());
        assert!(group_name("a\nb").is_err());
    }

    #[test]
    fn pages_hold_one_to_500() {
        assert!(page(Page::Newest { limit: 0 }).is_err());
        assert_eq!(
            page(Page::Since {
                epoch: 3,
                limit: 500
            }),
            Ok(())
        );
        assert!(page(Page::Before {
            epoch: 3,
            limit: 501
        })
        .is_err());
    }
}
