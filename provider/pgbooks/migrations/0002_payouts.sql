-- Payouts: each provider's numbered payouts (the Payout record as JSON),
-- its payout number, carry and currency, and the last daily payout time
-- considered (so a restart does not pay a day twice).
CREATE TABLE payouts (
    provider text   NOT NULL,
    number   bigint NOT NULL,
    payout   jsonb  NOT NULL,
    PRIMARY KEY (provider, number)
);
CREATE TABLE payout_meta (
    provider text   PRIMARY KEY,
    number   bigint NOT NULL,
    carry    bigint NOT NULL,
    currency text   NOT NULL
);
CREATE TABLE payout_slot (
    provider text   PRIMARY KEY,
    slot     bigint NOT NULL
);
