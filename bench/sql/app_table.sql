-- The app's messages table before msgbilling: what the guide's app saves.
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    content text,
    model text,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
