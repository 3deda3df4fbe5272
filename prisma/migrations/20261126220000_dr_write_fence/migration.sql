-- The database write fence (issue 10, F1): one row whose epoch is the DR state version of the last
-- write-relevant change (read-only mode, database or media switch, promote, reset). Every client
-- write's commit takes FOR SHARE on this row and commits only while the epoch is not above the DR
-- state version the write was admitted under; a change bumps it (UPDATE, which waits for the commits
-- holding the share lock) before it answers. So a write stalled past a change (a paused process, a
-- lost lease) can never commit after the change answered, whatever its timers did.
CREATE TABLE "dr_write_fence" (
    "id" SMALLINT NOT NULL DEFAULT 1,
    "epoch" BIGINT NOT NULL DEFAULT 0,
    "raised_at" TIMESTAMPTZ(3),
    "raised_by" TEXT,

    CONSTRAINT "dr_write_fence_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "dr_write_fence_one_row" CHECK ("id" = 1)
);

INSERT INTO "dr_write_fence" ("id", "epoch") VALUES (1, 0);
