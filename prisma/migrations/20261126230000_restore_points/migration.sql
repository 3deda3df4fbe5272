-- Named restore points (pg_create_restore_point), recorded: PostgreSQL keeps no catalog of them and
-- accepts a name twice, and recovery to a name stops at the first one, so a second point of the
-- same name would silently recover to the wrong place. The row is inserted in the transaction that
-- writes the point: the primary key refuses a name already used (also between concurrent requests).
CREATE TABLE "restore_points" (
    "name" TEXT NOT NULL,
    "lsn" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "created_by" TEXT NOT NULL,

    CONSTRAINT "restore_points_pkey" PRIMARY KEY ("name")
);
