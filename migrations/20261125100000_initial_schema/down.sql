DROP TABLE applied_requests;
DROP TABLE replication_log;
DROP TABLE messages;
DROP TABLE group_members;
DROP TABLE chat_groups;
DROP TABLE user_secrets;
DROP TABLE users;
DROP TABLE system_state;
