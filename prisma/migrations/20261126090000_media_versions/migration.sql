-- Media content is written once under an immutable version name; media_objects is the only
-- mutable pointer (key -> version). A row without a version is an object of the old layout, whose
-- content is stored under the key itself (migrated by `npm run media:migrate-layout`).
CREATE SEQUENCE "media_write_seq";

-- A deleted key keeps its row as a tombstone (deleted_at set, version null) until the garbage
-- collector purges it: every later write then conflicts on the row and takes its seq under the
-- row lock, so seq follows commit order. prev_version is the version the last change replaced.
ALTER TABLE "media_objects"
    ADD COLUMN "version" UUID,
    ADD COLUMN "seq" BIGINT NOT NULL DEFAULT nextval('media_write_seq'),
    ADD COLUMN "prev_version" UUID,
    ADD COLUMN "deleted_at" TIMESTAMPTZ(3);

-- Prefix listing: a byte-order index, usable by the range query whatever the database collation.
CREATE INDEX "media_objects_key_c_idx" ON "media_objects" ("key" COLLATE "C");

-- One row per stored version. `backends` lists where its content is known to be complete.
CREATE TABLE "media_versions" (
    "id" UUID NOT NULL,
    "key" TEXT NOT NULL,
    "size" BIGINT NOT NULL,
    "sha256" CHAR(64) NOT NULL,
    "content_type" TEXT NOT NULL,
    "backends" TEXT[] NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "media_versions_pkey" PRIMARY KEY ("id")
);

-- Versions the pointer moved away from (overwrite or delete), appended by the same statement that
-- moved it; their content is garbage-collected after the grace period.
CREATE TABLE "media_replaced" (
    "version" UUID NOT NULL,
    "at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "media_replaced_pkey" PRIMARY KEY ("version"),
    CONSTRAINT "media_replaced_version_fkey" FOREIGN KEY ("version") REFERENCES "media_versions"("id") ON DELETE CASCADE
);
CREATE INDEX "media_replaced_at_idx" ON "media_replaced" ("at");
CREATE INDEX "media_objects_deleted_at_idx" ON "media_objects" ("deleted_at") WHERE "deleted_at" IS NOT NULL;

-- Continuous backup work, written in the same transaction as the pointer change: a crash between
-- commit and copy leaves the row here, to be copied by any instance once its lease expires.
CREATE TABLE "media_outbox" (
    "id" BIGSERIAL NOT NULL,
    "version" UUID NOT NULL,
    "target" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "lease_until" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_error" TEXT,

    CONSTRAINT "media_outbox_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "media_outbox_version_fkey" FOREIGN KEY ("version") REFERENCES "media_versions"("id") ON DELETE CASCADE
);
CREATE INDEX "media_outbox_lease_idx" ON "media_outbox" ("lease_until");
CREATE INDEX "media_outbox_version_idx" ON "media_outbox" ("version");
