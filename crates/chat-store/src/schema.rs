//! Diesel table definitions, matching `migrations/*/up.sql` by hand.

diesel::table! {
    system_state (id) {
        id -> Integer,
        current_epoch -> BigInt,
        log_base_epoch -> BigInt,
        log_base_term -> BigInt,
    }
}

diesel::table! {
    users (uuid) {
        uuid -> Text,
        username -> Text,
        tag -> Text,
        created_at_ms -> BigInt,
        deleted_at_ms -> Nullable<BigInt>,
        epoch -> BigInt,
        session_version -> BigInt,
    }
}

diesel::table! {
    user_secrets (user_uuid) {
        user_uuid -> Text,
        bcrypt_hash -> Text,
    }
}

diesel::table! {
    chat_groups (uuid) {
        uuid -> Text,
        name -> Text,
        creator_uuid -> Text,
        owner_uuid -> Text,
        created_at_ms -> BigInt,
        deleted_at_ms -> Nullable<BigInt>,
        epoch -> BigInt,
    }
}

diesel::table! {
    group_members (group_uuid, user_uuid) {
        group_uuid -> Text,
        user_uuid -> Text,
        joined_at_ms -> BigInt,
        epoch -> BigInt,
    }
}

diesel::table! {
    messages (uuid) {
        uuid -> Text,
        chat_id -> Text,
        sender_uuid -> Text,
        receiver_user_uuid -> Nullable<Text>,
        receiver_group_uuid -> Nullable<Text>,
        content -> Text,
        created_at_ms -> BigInt,
        epoch -> BigInt,
    }
}

diesel::table! {
    replication_log (epoch) {
        epoch -> BigInt,
        term -> BigInt,
        first_epoch -> BigInt,
        body -> Text,
    }
}

diesel::table! {
    applied_requests (epoch) {
        epoch -> BigInt,
        request_id -> Text,
        fingerprint -> Text,
        answer -> Text,
    }
}

diesel::table! {
    chat_reads (user_uuid, chat_id) {
        user_uuid -> Text,
        chat_id -> Text,
        read_epoch -> BigInt,
        epoch -> BigInt,
    }
}

diesel::table! {
    private_chats (user_uuid, chat_id) {
        user_uuid -> Text,
        chat_id -> Text,
        other_uuid -> Text,
    }
}

diesel::joinable!(group_members -> users (user_uuid));
diesel::joinable!(group_members -> chat_groups (group_uuid));

diesel::allow_tables_to_appear_in_same_query!(
    system_state,
    users,
    user_secrets,
    chat_groups,
    group_members,
    messages,
    replication_log,
    applied_requests,
    chat_reads,
    private_chats,
);
