-- Each aggregate's payword quantity and what the chain progress records
-- naming it proved, while the two differ (deleted once they are equal);
-- each chain's highest index proven and its payword; and, in the totals, what the
-- aggregates claimed and the part proven without a device key.
CREATE TABLE payword_claims (
    kid      bytea   NOT NULL,
    epoch    bigint  NOT NULL,
    seq      bigint  NOT NULL,
    provider text    NOT NULL,
    account  text    NOT NULL,
    meter    text    NOT NULL,
    claimed  numeric NOT NULL,
    proven   numeric NOT NULL,
    records  bigint  NOT NULL,
    booked   boolean NOT NULL,
    foreign_records boolean NOT NULL,
    PRIMARY KEY (kid, epoch, seq)
);
CREATE TABLE payword_chains (
    device  text   NOT NULL,
    chain   bytea  NOT NULL,
    last_to bigint NOT NULL,
    last_word bytea NOT NULL,
    PRIMARY KEY (device, chain)
);
ALTER TABLE paywords ADD COLUMN claimed numeric NOT NULL DEFAULT 0;
ALTER TABLE paywords ADD COLUMN unattested numeric NOT NULL DEFAULT 0;
