-- The continuous backup's outbox: every row is eventually applied (the copy made and recorded) or
-- retired with a recorded reason; none is retried forever and none blocks another.
--
-- claim_token names the claim holding a row's lease: the holder renews the lease while it copies
-- (a short lease, so a crashed holder's rows, or rows whose claim answer was lost with the
-- connection, come back within seconds), and only the holder may reschedule its row.
-- failures counts definitive failures (the content missing, or not matching its sha256, on every
-- backend that should hold it): retrying cannot help those, so after a few the row is retired.
ALTER TABLE "media_outbox"
    ADD COLUMN "claim_token" UUID,
    ADD COLUMN "failures" INTEGER NOT NULL DEFAULT 0;

-- Outbox rows retired without a copy, and why (the version was replaced, its content is missing on
-- every backend that should hold it, the target is not configured). Kept for operators: one whose
-- version is still current and still missing on the target is reported by /health/media and
-- sav3_media_backup_retired until a sync copies it; purged after seven days.
CREATE TABLE "media_outbox_retired" (
    "id" BIGINT NOT NULL,
    "version" UUID NOT NULL,
    "key" TEXT NOT NULL,
    "target" TEXT NOT NULL,
    "reason" TEXT NOT NULL,
    "attempts" INTEGER NOT NULL,
    "last_error" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL,
    "retired_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "media_outbox_retired_pkey" PRIMARY KEY ("id")
);
CREATE INDEX "media_outbox_retired_version_idx" ON "media_outbox_retired" ("version");
CREATE INDEX "media_outbox_retired_retired_at_idx" ON "media_outbox_retired" ("retired_at");
-- What /health/media reports (read every half second): the few retired rows not retired as replaced.
CREATE INDEX "media_outbox_retired_unresolved_idx" ON "media_outbox_retired" ("created_at") WHERE "reason" <> 'replaced';
