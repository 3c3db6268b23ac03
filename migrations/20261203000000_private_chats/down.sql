CREATE INDEX messages_private_sender ON messages (sender_uuid, chat_id)
    WHERE receiver_user_uuid IS NOT NULL;
CREATE INDEX messages_private_receiver ON messages (receiver_user_uuid, chat_id)
    WHERE receiver_user_uuid IS NOT NULL;
DROP TABLE private_chats;
