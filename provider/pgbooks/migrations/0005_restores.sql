-- Restores: a stream a restored gateway's first record superseded after a
-- seq (the last its backup holds), the epoch of the stream that did, and
-- when. What the old stream numbered later left the payable books.
CREATE TABLE restores (
    kid       bytea  NOT NULL,
    epoch     bigint NOT NULL,
    after_seq bigint NOT NULL,
    by_epoch  bigint NOT NULL,
    at_ms     bigint NOT NULL,
    PRIMARY KEY (kid, epoch)
);
-- The records a restore took out of the payable books (aggregates and
-- credits), with their money; paid: an aggregate paid out before the
-- restore was known, carried as money to recover.
CREATE TABLE superseded (
    kid      bytea   NOT NULL,
    epoch    bigint  NOT NULL,
    seq      bigint  NOT NULL,
    kind     text    NOT NULL,
    provider text    NOT NULL,
    account  text    NOT NULL,
    currency text    NOT NULL,
    amount   bigint  NOT NULL,
    quantity numeric NOT NULL,
    tickets  numeric NOT NULL,
    paid     boolean NOT NULL,
    PRIMARY KEY (kid, epoch, seq)
);
-- The seq after which a superseded stream's records count in no gap.
ALTER TABLE streams ADD COLUMN cut bigint;
