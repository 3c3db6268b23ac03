-- Who has which private chat, one row per side. It replaces the two partial indexes on
-- messages (sender, chat) and (receiver, chat): those took an index entry on every private
-- message, each on a page of its own chat, which made two of the pages every message dirtied
-- (on the writer and on every follower). A row here is written once per chat and side; later
-- messages find it and write nothing (`INSERT OR IGNORE`). Derived from messages, so a
-- snapshot rebuilds it rather than carrying it. No epoch column: a row never changes after
-- the first message of its chat, which every node applies at the same epoch.
CREATE TABLE private_chats (
    user_uuid  TEXT NOT NULL,
    chat_id    TEXT NOT NULL,
    other_uuid TEXT NOT NULL,
    PRIMARY KEY (user_uuid, chat_id)
) WITHOUT ROWID;

INSERT OR IGNORE INTO private_chats (user_uuid, chat_id, other_uuid)
    SELECT sender_uuid, chat_id, receiver_user_uuid FROM messages
    WHERE receiver_user_uuid IS NOT NULL;
INSERT OR IGNORE INTO private_chats (user_uuid, chat_id, other_uuid)
    SELECT receiver_user_uuid, chat_id, sender_uuid FROM messages
    WHERE receiver_user_uuid IS NOT NULL;

DROP INDEX messages_private_sender;
DROP INDEX messages_private_receiver;
