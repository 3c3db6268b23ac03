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
/// Longest message, in characters after trimming.
pub const MESSAGE_MAX_CHARS: usize = 4000;
/// Largest page of messages one read returns; a larger page is read as this many.
pub const PAGE_MAX: u32 = 200;
/// The page size the JSON API uses when the client names none.
pub const PAGE_DEFAULT: u32 = 50;
/// Most users one search returns.
pub const SEARCH_MAX: u32 = 50;

/// Letters and digits of any script, plus `_`, `-` and `.`, not all dots (`.` and `..` would
/// be path segments): nothing that needs escaping in a URL path segment or could be confused
/// with the `#` separator.
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
    if name.chars().all(|c| c == '.') {
        return Err(ServiceError::invalid(
            "The username may not consist of dots only.",
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
            "The password must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes long \
             ({PASSWORD_MAX_BYTES} bytes is bcrypt's limit)."
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

/// 1 to 4000 characters after trimming, no control characters except line breaks and tabs.
/// Returns the trimmed text, which is what is stored.
pub fn message_content(content: &str) -> Result<String, ServiceError> {
    let content = content.trim();
    if content.is_empty() {
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
    Ok(content.to_owned())
}

/// A page of at least one message; more than 200 is read as 200.
pub fn page(page: Page) -> Result<Page, ServiceError> {
    match page.limit() {
        0 => Err(ServiceError::invalid("A page holds at least one message.")),
        limit => Ok(page.with_limit(limit.min(PAGE_MAX))),
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
        for good in ["alice", "Élodie_2", "a.b-c", "名前", ".a", "_"] {
            assert_eq!(username(good), Ok(()), "{good}");
        }
        let long = "x".repeat(USERNAME_MAX_CHARS + 1);
        for bad in [
            "",
            "a b",
            "a#b",
            "a/b",
            "x'; DROP TABLE users; --",
            ".",
            "...",
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
    fn messages_are_one_to_4000_characters_of_text_after_trimming() {
        assert!(message_content("").is_err());
        assert!(message_content(" \n\t").is_err());
        assert_eq!(
            message_content(" line one\nline two\ttab\n"),
            Ok("line one\nline two\ttab".to_owned())
        );
        let longest = "é".repeat(MESSAGE_MAX_CHARS);
        assert_eq!(message_content(&format!("  {longest}  ")), Ok(longest));
        assert!(message_content(&"x".repeat(MESSAGE_MAX_CHARS + 1)).is_err());
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
    fn pages_hold_at_least_one_and_more_than_200_reads_as_200() {
        assert!(page(Page::Newest { limit: 0 }).is_err());
        assert_eq!(
            page(Page::Since {
                epoch: 3,
                limit: 200
            }),
            Ok(Page::Since {
                epoch: 3,
                limit: 200
            })
        );
        assert_eq!(
            page(Page::Before {
                epoch: 3,
                limit: 501
            }),
            Ok(Page::Before {
                epoch: 3,
                limit: 200
            })
        );
    }
}
