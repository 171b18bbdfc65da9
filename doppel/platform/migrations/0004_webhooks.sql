-- Webhooks (issue 6, item 4): each tenant signs its callbacks with its own secret, replicas and
-- videos may name a `callback_url`, and every delivery (with each attempt's outcome) is recorded.

-- 64 hex characters (two v4 UUIDs' random bits, ~244 bits from pg_strong_random). A volatile
-- default is evaluated per row, so existing tenants get their own secret too.
ALTER TABLE tenants ADD COLUMN webhook_secret text NOT NULL
    DEFAULT 'whsec_' || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');

ALTER TABLE replicas ADD COLUMN callback_url text;
ALTER TABLE videos ADD COLUMN callback_url text;

CREATE TABLE webhook_deliveries (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_type text NOT NULL CHECK (object_type IN ('replica', 'video')),
    object_id text NOT NULL,
    -- `<object_type>.<status reached>`: `replica.started`, `video.ready`, ...
    event text NOT NULL,
    url text NOT NULL,
    -- The exact bytes POSTed (and signed), as UTF-8 JSON.
    request_body text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error text,
    -- When the next attempt is due; NULL once delivered or given up.
    next_attempt_at timestamptz DEFAULT now(),
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_tenant_created ON webhook_deliveries (tenant_id, created_at DESC);
CREATE INDEX webhook_deliveries_object ON webhook_deliveries (object_id, created_at DESC);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND next_attempt_at IS NOT NULL;
