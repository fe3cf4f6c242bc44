-- The provider's books: what the gateways sent, booked exactly once by
-- (gateway key id, stream epoch, seq). Amounts are nanos of their currency:
-- one record's fits a bigint (the wire format bounds it to 2^63-1); sums are
-- numeric, so no sum overflows. Epochs are uint64 on the wire, stored as the
-- bigint with the same 64 bits.

-- Every record booked, as it arrived (signed): aggregates, credits, holds.
CREATE TABLE booked (
    kid       bytea    NOT NULL,
    epoch     bigint   NOT NULL,
    seq       bigint   NOT NULL,
    gateway   text     NOT NULL,
    bytes     bytea    NOT NULL,
    booked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kid, epoch, seq)
);

-- One row per stream: its gateway, highest seq and count (gaps are the
-- seqs up to high that are not booked), and the epoch it reset, if any.
CREATE TABLE streams (
    kid             bytea  NOT NULL,
    epoch           bigint NOT NULL,
    gateway         text   NOT NULL,
    high            bigint NOT NULL,
    count           bigint NOT NULL,
    first_ms        bigint NOT NULL,
    reset_from      bigint,
    reset_from_last bigint,
    PRIMARY KEY (kid, epoch)
);

-- The newest epoch seen per key, to tell a stream reset.
CREATE TABLE latest (
    kid   bytea  PRIMARY KEY,
    epoch bigint NOT NULL
);

-- The gateway id each trusted key speaks for.
CREATE TABLE bindings (
    kid     bytea PRIMARY KEY,
    gateway text  NOT NULL
);

-- Records kept aside, never booked: a conflict (same stream and seq, other
-- bytes) or a wrong gateway id.
CREATE TABLE held (
    kid    bytea  NOT NULL,
    epoch  bigint NOT NULL,
    seq    bigint NOT NULL,
    hash   bytea  NOT NULL,
    reason text   NOT NULL,
    at_ms  bigint NOT NULL,
    bytes  bytea  NOT NULL,
    PRIMARY KEY (kid, epoch, seq, hash)
);

-- What the providers are owed, per provider, account and currency.
CREATE TABLE totals (
    provider   text    NOT NULL,
    account    text    NOT NULL,
    currency   text    NOT NULL,
    amount     numeric NOT NULL,
    quantity   numeric NOT NULL,
    tickets    numeric NOT NULL,
    aggregates bigint  NOT NULL,
    PRIMARY KEY (provider, account, currency)
);

-- Money the gateways credited at the edge (top-ups, vouchers).
CREATE TABLE credits (
    account  text    NOT NULL,
    currency text    NOT NULL,
    kind     text    NOT NULL,
    amount   numeric NOT NULL,
    count    bigint  NOT NULL,
    PRIMARY KEY (account, currency, kind)
);

-- Where each voucher was first credited, and every later credit of it.
CREATE TABLE vouchers (
    voucher text   PRIMARY KEY,
    kid     bytea  NOT NULL,
    epoch   bigint NOT NULL,
    seq     bigint NOT NULL
);
CREATE TABLE doubles (
    voucher     text   NOT NULL,
    kid         bytea  NOT NULL,
    epoch       bigint NOT NULL,
    seq         bigint NOT NULL,
    first_kid   bytea  NOT NULL,
    first_epoch bigint NOT NULL,
    first_seq   bigint NOT NULL,
    PRIMARY KEY (voucher, kid, epoch, seq)
);

-- The latest hold record of each held ticket.
CREATE TABLE quarantine (
    gateway text   NOT NULL,
    device  text   NOT NULL,
    ticket  bigint NOT NULL,
    seq     bigint NOT NULL,
    bytes   bytea  NOT NULL,
    PRIMARY KEY (gateway, device, ticket)
);

-- Aggregates not paid out yet, per provider and currency.
CREATE TABLE unpaid (
    kid      bytea  NOT NULL,
    epoch    bigint NOT NULL,
    seq      bigint NOT NULL,
    provider text   NOT NULL,
    currency text   NOT NULL,
    amount   bigint NOT NULL,
    PRIMARY KEY (kid, epoch, seq)
);
CREATE INDEX unpaid_provider ON unpaid (provider, currency);
