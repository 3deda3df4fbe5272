-- The database write fence (issue 10, F1): per DR state (its Redis key prefix, `scope`), the DR state
-- version of the last write-relevant change (read-only mode, database or media switch, promote,
-- reset). Every client write's commit takes FOR SHARE on its scope's row and commits only while the
-- epoch is not above the DR state version the write was admitted under; a change raises it
-- (an upsert, which waits for the commits holding the share lock) before it answers. So a write
-- stalled past a change (a paused process, a lost lease) can never commit after the change
-- answered, whatever its own timers did. Rows are created by the first raise or commit of a scope.
CREATE TABLE "dr_write_fence" (
    "scope" TEXT NOT NULL,
    "epoch" BIGINT NOT NULL DEFAULT 0,
    "raised_at" TIMESTAMPTZ(3),
    "raised_by" TEXT,

    CONSTRAINT "dr_write_fence_pkey" PRIMARY KEY ("scope")
);
