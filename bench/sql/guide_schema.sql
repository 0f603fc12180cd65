-- The migration guide's exact schema: the app's messages table with the
-- three billing columns and the guide's three indexes, and the simplest
-- wallet, ledger and price tables a hand-written biller needs.
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    content text,
    model text,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    cost_credits numeric(10,6),
    charged_at timestamptz,
    billing_status varchar(20) DEFAULT 'pending'
);
CREATE INDEX idx_messages_billing_status ON messages (billing_status);
CREATE INDEX idx_messages_org_billing ON messages (org_id, billing_status);
CREATE INDEX idx_messages_charged_at ON messages (charged_at);

CREATE TABLE credits (org_id uuid PRIMARY KEY, balance numeric(20,6) NOT NULL);
CREATE TABLE ledger (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    kind text NOT NULL,
    amount numeric(20,6) NOT NULL,
    balance_after numeric(20,6) NOT NULL,
    message_count integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE prices (model text, credits_per_token numeric NOT NULL);
