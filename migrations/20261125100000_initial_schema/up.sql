-- The chat schema. Every row a write touches carries the epoch of that write (the value of
-- system_state.current_epoch after it), so replicas can be compared row by row with the writer.
-- Times are unix milliseconds chosen by the writer and carried inside the replicated operation.

-- Exactly one row: the number of writes applied to this database.
CREATE TABLE system_state (
    id            INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    current_epoch BIGINT  NOT NULL CHECK (current_epoch >= 0)
);
INSERT INTO system_state (id, current_epoch) VALUES (1, 0);

CREATE TABLE users (
    uuid          TEXT   PRIMARY KEY NOT NULL,
    username      TEXT   NOT NULL,
    -- 3 to 6 digits, the whole string; the service checks this first with a clear message.
    tag           TEXT   NOT NULL CHECK (length(tag) BETWEEN 3 AND 6 AND tag NOT GLOB '*[^0-9]*'),
    created_at_ms BIGINT NOT NULL,
    deleted_at_ms BIGINT,
    epoch         BIGINT NOT NULL
);
-- Unique among live users only: deleting an account frees its username#tag (the prototype's
-- index also covered deleted rows, so a name could never come back).
CREATE UNIQUE INDEX users_live_username_tag ON users (username, tag) WHERE deleted_at_ms IS NULL;
CREATE INDEX users_username ON users (username);

-- Kept apart from users so that no query for users can pick up a hash by accident.
CREATE TABLE user_secrets (
    user_uuid   TEXT PRIMARY KEY NOT NULL REFERENCES users (uuid),
    bcrypt_hash TEXT NOT NULL
);

CREATE TABLE chat_groups (
    uuid          TEXT   PRIMARY KEY NOT NULL,
    name          TEXT   NOT NULL,
    creator_uuid  TEXT   NOT NULL REFERENCES users (uuid),
    -- The member allowed to remove others and delete the group. Starts as the creator and
    -- passes to the longest-standing member when the owner leaves.
    owner_uuid    TEXT   NOT NULL REFERENCES users (uuid),
    created_at_ms BIGINT NOT NULL,
    deleted_at_ms BIGINT,
    epoch         BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_uuid   TEXT   NOT NULL REFERENCES chat_groups (uuid),
    user_uuid    TEXT   NOT NULL REFERENCES users (uuid),
    joined_at_ms BIGINT NOT NULL,
    epoch        BIGINT NOT NULL,
    PRIMARY KEY (group_uuid, user_uuid)
);
CREATE INDEX group_members_user ON group_members (user_uuid);

CREATE TABLE messages (
    uuid                TEXT   PRIMARY KEY NOT NULL,
    -- "<smaller user uuid>:<larger user uuid>" for private chats, the group uuid for groups.
    chat_id             TEXT   NOT NULL,
    sender_uuid         TEXT   NOT NULL REFERENCES users (uuid),
    receiver_user_uuid  TEXT   REFERENCES users (uuid),
    receiver_group_uuid TEXT   REFERENCES chat_groups (uuid),
    content             TEXT   NOT NULL,
    created_at_ms       BIGINT NOT NULL,
    epoch               BIGINT NOT NULL,
    CHECK ((receiver_user_uuid IS NULL) <> (receiver_group_uuid IS NULL))
);
-- Epochs are unique per write, so (chat_id, epoch) orders a chat exactly as it was committed.
CREATE INDEX messages_chat_epoch ON messages (chat_id, epoch);

-- One serialised operation per epoch, for replicas catching up.
CREATE TABLE replication_log (
    epoch     BIGINT PRIMARY KEY NOT NULL,
    operation TEXT   NOT NULL
);

-- Client-chosen request ids of applied writes, so a retried write returns its first result.
CREATE TABLE applied_requests (
    request_id TEXT   PRIMARY KEY NOT NULL,
    epoch      BIGINT NOT NULL,
    outcome    TEXT   NOT NULL
);
CREATE INDEX applied_requests_epoch ON applied_requests (epoch);
