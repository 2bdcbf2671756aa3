-- The daemons sharing this ledger (docs/ARCHITECTURE.md §8, "Lanes across replicas"): each
-- `payrecon run` writes its row every third of the lease and deletes it when it stops. Those
-- seen within one lease are live, and each takes at most its fair share of the accounts'
-- lanes (accounts / live replicas, rounded up).
CREATE TABLE replicas (
    holder      TEXT PRIMARY KEY NOT NULL,
    started_at  TEXT NOT NULL,
    seen_at     TEXT NOT NULL
);
