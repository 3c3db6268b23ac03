DROP INDEX messages_private_receiver;
DROP INDEX messages_private_sender;
DROP TABLE chat_reads;
ALTER TABLE system_state DROP COLUMN log_base_term;
ALTER TABLE system_state DROP COLUMN log_base_epoch;
DROP TABLE applied_requests;
CREATE TABLE applied_requests (
    request_id TEXT   PRIMARY KEY NOT NULL,
    epoch      BIGINT NOT NULL,
    outcome    TEXT   NOT NULL
);
CREATE INDEX applied_requests_epoch ON applied_requests (epoch);
DROP TABLE replication_log;
CREATE TABLE replication_log (
    epoch     BIGINT PRIMARY KEY NOT NULL,
    operation TEXT   NOT NULL
);
