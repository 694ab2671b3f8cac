-- Memory (MiB) and CPUs the sandboxes leased to a worker asked for: a placement
-- reserves them with its slot, a release gives them back.
ALTER TABLE workers ADD COLUMN reserved_memory_mb BIGINT NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN reserved_vcpus BIGINT NOT NULL DEFAULT 0;
UPDATE workers SET
    reserved_memory_mb = (SELECT COALESCE(SUM(s.memory_mb), 0) FROM leases l
                          JOIN sandboxes s ON s.id = l.sandbox_id WHERE l.worker_id = workers.id),
    reserved_vcpus = (SELECT COALESCE(SUM(s.vcpus), 0) FROM leases l
                      JOIN sandboxes s ON s.id = l.sandbox_id WHERE l.worker_id = workers.id);
