-- Share links (issue 6): a browser's <video src> or <img src> cannot send x-api-key, so each
-- video and replica carries a random token that opens its media (and a video's hosted page)
-- without the key. The token is a per-row volatile default: existing rows get their own, and
-- the INSERTs need not name it. 16 bytes of pg_strong_random (a v4 UUID keeps 122 of them),
-- URL-safe base64 without padding: 22 characters, like Python's secrets.token_urlsafe(16).
ALTER TABLE videos ADD COLUMN share_token text NOT NULL
    DEFAULT rtrim(translate(encode(decode(replace(gen_random_uuid()::text, '-', ''), 'hex'),
                                   'base64'), '+/', '-_'), '=');
ALTER TABLE replicas ADD COLUMN share_token text NOT NULL
    DEFAULT rtrim(translate(encode(decode(replace(gen_random_uuid()::text, '-', ''), 'hex'),
                                   'base64'), '+/', '-_'), '=');
