-- The data plane: a log of (term, epoch) entries, each the ops of one group-commit batch;
-- remembered request ids bound to a fingerprint of their request; per-user read positions.

-- One row per entry, keyed by its last epoch. `INTEGER PRIMARY KEY` makes the epoch the rowid
-- (the old `BIGINT PRIMARY KEY` kept a second index beside the table).
DROP TABLE replication_log;
CREATE TABLE replication_log (
    epoch       INTEGER PRIMARY KEY NOT NULL,
    term        BIGINT  NOT NULL CHECK (term >= 0),
    first_epoch BIGINT  NOT NULL CHECK (first_epoch >= 1 AND first_epoch <= epoch),
    -- JSON: the entry's ops in epoch order (and which remembered ids it forgets).
    body        TEXT    NOT NULL
);

-- Every write is one epoch with one request id, so the epoch keys the row (range deletes when
-- old ids are forgotten) and the id has its own unique index (look-ups on replay).
DROP TABLE applied_requests;
CREATE TABLE applied_requests (
    epoch       INTEGER PRIMARY KEY NOT NULL,
    request_id  TEXT    NOT NULL UNIQUE,
    -- Hash of the request's kind, acting user and parameters: a replay must match it.
    fingerprint TEXT    NOT NULL,
    -- The answer a replay gets, kept small (a message is named by its uuid, not copied).
    answer      TEXT    NOT NULL
);

-- (term, epoch) of the last entry no longer in the log (trimmed, or the snapshot restored),
-- so the election key survives an empty log.
ALTER TABLE system_state ADD COLUMN log_base_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE system_state ADD COLUMN log_base_term  BIGINT NOT NULL DEFAULT 0;

-- How far each user has read each chat: the epoch of the newest message they have seen.
CREATE TABLE chat_reads (
    user_uuid  TEXT   NOT NULL REFERENCES users (uuid),
    chat_id    TEXT   NOT NULL,
    read_epoch BIGINT NOT NULL,
    epoch      BIGINT NOT NULL,
    PRIMARY KEY (user_uuid, chat_id)
) WITHOUT ROWID;

-- A user's private chats, found from either side. Partial: group messages do not pay for them.
CREATE INDEX messages_private_sender ON messages (sender_uuid, chat_id)
    WHERE receiver_user_uuid IS NOT NULL;
CREATE INDEX messages_private_receiver ON messages (receiver_user_uuid, chat_id)
    WHERE receiver_user_uuid IS NOT NULL;

-- The log is empty now: its base is where the database stands.
UPDATE system_state SET log_base_epoch = current_epoch;
