-- The control channel: every command pushed, numbered per target, and
-- each gateway's latest acknowledgement of each command (local changes
-- a gateway reported too: their command ids begin with local-).
CREATE TABLE fleet_commands (
    target text   NOT NULL,
    seq    bigint NOT NULL,
    id     text   NOT NULL UNIQUE,
    bytes  bytea  NOT NULL,
    PRIMARY KEY (target, seq)
);
CREATE TABLE fleet_acks (
    command text    NOT NULL,
    gateway text    NOT NULL,
    epoch   bigint  NOT NULL,
    seq     bigint  NOT NULL,
    refused boolean NOT NULL,
    bytes   bytea   NOT NULL,
    PRIMARY KEY (command, gateway)
);
