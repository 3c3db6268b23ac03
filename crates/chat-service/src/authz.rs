//! Who may do what. Pure decisions over facts the caller looked up inside the same store
//! session, so a rule cannot be checked against one state and applied to another.
//!
//! The rules:
//! - only members see a group's page, its members and its chat, and only members post to it;
//! - only members add members;
//! - any member may leave; only the group's owner removes others or deletes the group (the
//!   owner is the creator until they leave, then the longest-standing member);
//! - a user deletes only their own account;
//! - a user does not open a private chat with themself.

use uuid::Uuid;

use crate::error::ServiceError;

/// Seeing or posting in a group.
pub(crate) fn member_access(actor_is_member: bool) -> Result<(), ServiceError> {
    if actor_is_member {
        Ok(())
    } else {
        Err(ServiceError::forbidden(
            "Only members of this group can do that.",
        ))
    }
}

/// Adding someone to a group.
pub(crate) fn add_member(actor_is_member: bool) -> Result<(), ServiceError> {
    if actor_is_member {
        Ok(())
    } else {
        Err(ServiceError::forbidden(
            "Only members of this group can add members.",
        ))
    }
}

/// Removing `target` from a group (leaving when `target == actor`).
pub(crate) fn remove_member(
    actor: Uuid,
    target: Uuid,
    owner: Uuid,
    actor_is_member: bool,
) -> Result<(), ServiceError> {
    if !actor_is_member {
        return Err(ServiceError::forbidden(
            "Only members of this group can do that.",
        ));
    }
    if actor == target || actor == owner {
        Ok(())
    } else {
        Err(ServiceError::forbidden(
            "Only the group's owner can remove other members.",
        ))
    }
}

/// Deleting a group.
pub(crate) fn delete_group(actor: Uuid, owner: Uuid) -> Result<(), ServiceError> {
    if actor == owner {
        Ok(())
    } else {
        Err(ServiceError::forbidden(
            "Only the group's owner can delete it.",
        ))
    }
}

/// Deleting an account.
pub(crate) fn delete_account(actor: Uuid, target: Uuid) -> Result<(), ServiceError> {
    if actor == target {
        Ok(())
    } else {
        Err(ServiceError::forbidden(
            "You can only delete your own account.",
        ))
    }
}

/// Opening a private chat.
pub(crate) fn private_chat(actor: Uuid, other: Uuid) -> Result<(), ServiceError> {
    if actor == other {
        Err(ServiceError::invalid("A private chat needs another user."))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_table() {
        let (owner, member, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        // (actor, target, actor is member, allowed)
        let table = [
            (member, member, true, true),  // leaving
            (owner, member, true, true),   // owner removes
            (owner, owner, true, true),    // owner leaves
            (member, owner, true, false),  // member removes owner
            (member, other, true, false),  // member removes member
            (other, other, false, false),  // non-member "leaves"
            (other, member, false, false), // non-member removes
        ];
        for (actor, target, is_member, allowed) in table {
            let result = remove_member(actor, target, owner, is_member);
            assert_eq!(
                result.is_ok(),
                allowed,
                "{actor} removes {target}: {result:?}"
            );
            if let Err(e) = result {
                assert!(matches!(e, ServiceError::Forbidden(_)));
            }
        }
    }

    #[test]
    fn only_the_owner_deletes_and_only_yourself() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(delete_group(a, a).is_ok());
        assert!(delete_group(b, a).is_err());
        assert!(delete_account(a, a).is_ok());
        assert!(delete_account(a, b).is_err());
        assert!(private_chat(a, a).is_err());
        assert!(member_access(false).is_err() && add_member(false).is_err());
    }
}
