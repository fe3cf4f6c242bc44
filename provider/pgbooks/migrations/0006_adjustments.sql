-- The adjustment that settled a voucher credited twice: the adjustment's
-- stream and seq, its signed amount (negative: a debit) and its reason.
CREATE TABLE resolutions (
    voucher text   PRIMARY KEY,
    kid     bytea  NOT NULL,
    epoch   bigint NOT NULL,
    seq     bigint NOT NULL,
    amount  bigint NOT NULL,
    reason  text   NOT NULL
);
