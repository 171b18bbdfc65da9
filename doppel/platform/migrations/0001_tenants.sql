-- Tenants own everything; API keys identify a tenant. Keys are stored as sha256 hashes only:
-- the plaintext is shown once, at creation.
CREATE TABLE tenants (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash text NOT NULL UNIQUE,
    -- First characters of the key, so a person can tell their keys apart in listings.
    prefix text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);
