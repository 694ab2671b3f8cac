-- Certificates of workers whose record was removed (`DELETE /api/v1/workers/{id}`):
-- kept refused after the worker and its worker_certificates rows are gone.
CREATE TABLE revoked_certificates (
    serial      TEXT PRIMARY KEY NOT NULL,
    worker_id   TEXT NOT NULL,
    revoked_at  INTEGER NOT NULL
);
