-- The RSA keys that sign jobs' `id_tokens` (GitLab's ci_jwt_signing_key): the newest key
-- not retired signs; retired keys stay in the JWKS for a while so that tokens signed before
-- a rotation still verify. `private_key` is the PKCS#8 key, sealed like CI/CD variables.
CREATE TABLE id_token_signing_keys (
    id BIGSERIAL PRIMARY KEY,
    kid TEXT NOT NULL UNIQUE,
    private_key TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    retired_at TIMESTAMP
);
