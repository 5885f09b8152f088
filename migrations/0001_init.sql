-- cryptoworker schema, version 1. Documented table by table in docs/database.md.
-- Applied by the runner in src/db/migrate.rs inside one transaction, under an advisory lock.

-- Epochs are compared by byte order (they start with the creation time in fixed-width hex), so
-- every epoch column uses the "C" collation: (epoch, seq) pairs order events across restarts.

-- The worker's persistent identity: the current epoch (sequence numbers restart per epoch).
CREATE TABLE worker_state (
    id smallint PRIMARY KEY CHECK (id = 1),
    epoch text COLLATE "C" NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The event log: every sequenced event, exactly once per (epoch, seq). Public contract (SPEC §5).
CREATE TABLE events (
    epoch text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    coin text NOT NULL,
    event text NOT NULL,
    wallet text NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT events_epoch_seq_key PRIMARY KEY (epoch, seq)
);

-- One row per (coin, transaction, wallet). `wallet` is '' for a transaction seen without a wallet.
-- (tx_epoch, tx_seq) is the newest new_transaction applied, (verified_epoch, verified_seq) the newest
-- verified_tx: an older event replayed later never overwrites what a newer one wrote.
CREATE TABLE transactions (
    coin text NOT NULL,
    tx_hash text NOT NULL,
    wallet text NOT NULL DEFAULT '',
    amount numeric NULL,
    from_address text NULL,
    to_address text NULL,
    addresses text[] NOT NULL DEFAULT '{}',
    confirmations integer NULL,
    contract text NULL,
    height bigint NULL,
    confirmed boolean NOT NULL DEFAULT false,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    tx_epoch text COLLATE "C" NULL,
    tx_seq bigint NULL,
    verified_epoch text COLLATE "C" NULL,
    verified_seq bigint NULL,
    CONSTRAINT transactions_pkey PRIMARY KEY (coin, tx_hash, wallet)
);

-- The highest block announced per coin (only ever grows).
CREATE TABLE chain_tips (
    coin text PRIMARY KEY,
    height bigint NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Payment history: one row per distinct payment state (the SPEC §4 de-duplication key), so a
-- replayed or duplicated new_payment adds no row. `wallet` is '' when the event had none.
CREATE TABLE payments (
    coin text NOT NULL,
    wallet text NOT NULL DEFAULT '',
    request_id text NOT NULL,
    status integer NOT NULL,
    status_str text NULL,
    sent_amount numeric NOT NULL,
    tx_hashes text[] NOT NULL DEFAULT '{}',
    contract text NULL,
    confirmations integer NULL,
    epoch text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT payments_state_key UNIQUE (coin, wallet, request_id, status, sent_amount)
);

-- Wallets to watch. Public contract (SPEC §5): users' applications insert here; the worker only reads.
CREATE TABLE IF NOT EXISTS watched_wallets (
    coin text NOT NULL,
    xpub text NOT NULL,
    contract text NULL,
    label text NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Unique on (coin, xpub, contract), a NULL contract included (NULLS NOT DISTINCT needs PostgreSQL 15).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'watched_wallets_coin_xpub_contract_key') THEN
        IF current_setting('server_version_num')::int >= 150000 THEN
            EXECUTE 'ALTER TABLE watched_wallets ADD CONSTRAINT watched_wallets_coin_xpub_contract_key '
                 || 'UNIQUE NULLS NOT DISTINCT (coin, xpub, contract)';
        ELSE
            EXECUTE 'ALTER TABLE watched_wallets ADD CONSTRAINT watched_wallets_coin_xpub_contract_key '
                 || 'UNIQUE (coin, xpub, contract)';
            EXECUTE 'CREATE UNIQUE INDEX watched_wallets_no_contract_key ON watched_wallets (coin, xpub) '
                 || 'WHERE contract IS NULL';
        END IF;
    END IF;
END $$;

-- Payment requests to reconcile. Public contract (SPEC §5): users' applications insert here; the
-- worker updates only status, sent_amount, tx_hashes, confirmations and updated_at.
CREATE TABLE IF NOT EXISTS payment_requests (
    coin text NOT NULL,
    xpub text NOT NULL,
    contract text NULL,
    request_id text NOT NULL,
    status integer NOT NULL DEFAULT 0,
    sent_amount numeric NOT NULL DEFAULT 0,
    tx_hashes text[] NOT NULL DEFAULT '{}',
    confirmations integer NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_requests_coin_request_id_key UNIQUE (coin, request_id)
);

-- Coins are matched case-insensitively (events carry upper case, users may write lower case).
CREATE INDEX IF NOT EXISTS payment_requests_upper_coin_idx ON payment_requests (upper(coin), request_id);

-- The newest new_payment applied to each request, so an older one replayed later is ignored.
CREATE TABLE payment_request_applied (
    coin text NOT NULL,
    request_id text NOT NULL,
    epoch text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    CONSTRAINT payment_request_applied_pkey PRIMARY KEY (coin, request_id)
);

-- Requests the daemon no longer knows: left out of the open set until the request is inserted again.
CREATE TABLE payment_requests_gone (
    coin text NOT NULL,
    request_id text NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_requests_gone_pkey PRIMARY KEY (coin, request_id)
);

-- Change notifications for the worker's listener. Writes made by the worker's own writer sessions
-- (which SET cryptoworker.writer = 'on') do not notify: the worker already knows about them.
CREATE OR REPLACE FUNCTION cryptoworker_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('cryptoworker.writer', true), '') <> 'on' THEN
        PERFORM pg_notify('cryptoworker_watch', TG_ARGV[0]);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER watched_wallets_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON watched_wallets
    FOR EACH STATEMENT EXECUTE FUNCTION cryptoworker_notify_change('wallets');

CREATE TRIGGER payment_requests_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON payment_requests
    FOR EACH STATEMENT EXECUTE FUNCTION cryptoworker_notify_change('requests');

-- A request inserted again is live again.
CREATE OR REPLACE FUNCTION cryptoworker_request_revived() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM payment_requests_gone g WHERE g.coin = upper(NEW.coin) AND g.request_id = NEW.request_id;
    RETURN NULL;
END $$;

CREATE TRIGGER payment_requests_revive
    AFTER INSERT ON payment_requests
    FOR EACH ROW EXECUTE FUNCTION cryptoworker_request_revived();
