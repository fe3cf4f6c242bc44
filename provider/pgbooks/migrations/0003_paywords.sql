-- Usage proven by payword chains, checked by the receiver from each chain
-- progress record's paywords and the device's commitment: by provider,
-- account and meter.
CREATE TABLE paywords (
    provider text    NOT NULL,
    account  text    NOT NULL,
    meter    text    NOT NULL,
    quantity numeric NOT NULL,
    records  bigint  NOT NULL,
    PRIMARY KEY (provider, account, meter)
);
