-- CreateTable
CREATE TABLE "backup_validations" (
    "id" UUID NOT NULL,
    "job_id" UUID NOT NULL,
    "status" TEXT NOT NULL,
    "backup_label" TEXT,
    "target_time" TIMESTAMPTZ(3),
    "started_at" TIMESTAMPTZ(3) NOT NULL,
    "finished_at" TIMESTAMPTZ(3) NOT NULL,
    "restore_ms" INTEGER,
    "recovery_ms" INTEGER,
    "total_ms" INTEGER NOT NULL,
    "restored_bytes" BIGINT,
    "report" JSONB NOT NULL,
    "instance_id" TEXT NOT NULL,

    CONSTRAINT "backup_validations_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "backup_validations_finished_at_idx" ON "backup_validations"("finished_at" DESC);
