-- cryptoworker schema, version 3: the cluster's fencing term (docs/cluster.md, "Fencing";
-- docs/database.md, `cluster_term`).
--
-- One row. A node that wins the election bumps `term` in its elector session before it reads
-- where the log ends; in cluster mode every writer transaction first reads it `FOR SHARE` and
-- writes nothing unless it equals the term its node leads with. Unused outside cluster mode.
CREATE TABLE IF NOT EXISTS cluster_term (
    id smallint PRIMARY KEY CHECK (id = 1),
    term bigint NOT NULL
);
INSERT INTO cluster_term (id, term) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
