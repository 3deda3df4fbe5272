-- Objects of the old layout (content stored under the user's key) whose key was deleted or
-- overwritten: appended by the same statement that moved the pointer away from them. The garbage
-- collector removes the object named `key` after the grace period, on every backend, if no row
-- still references it then (a live old-layout row for the key, or a version of that name).
CREATE TABLE "media_legacy_garbage" (
    "key" TEXT NOT NULL,
    "at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "media_legacy_garbage_pkey" PRIMARY KEY ("key")
);
CREATE INDEX "media_legacy_garbage_at_idx" ON "media_legacy_garbage" ("at");
