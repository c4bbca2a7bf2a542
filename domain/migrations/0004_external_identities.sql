-- Accounts at the school's identity provider, bound to roster people. An OpenID Connect account
-- is named by its issuer and subject (`iss`, `sub`): stable for the account's life, unlike its
-- e-mail address, which the provider (or, at some providers, the user) may change. The first
-- sign-in finds the person by a trusted e-mail address and records the binding; every later
-- sign-in finds them by this pair alone, so a changed address keeps working and an address
-- claimed later by another account signs nobody in as this person.
--
-- One account per person per issuer: a second account with the same address is refused rather
-- than given a second way in.
CREATE TABLE external_identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    person_id  TEXT NOT NULL REFERENCES people (id),
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject),
    UNIQUE (issuer, person_id)
);
