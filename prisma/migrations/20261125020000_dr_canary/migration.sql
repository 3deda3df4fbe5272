-- CreateTable
CREATE TABLE "dr_canary" (
    "id" UUID NOT NULL,
    "instance_id" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "dr_canary_pkey" PRIMARY KEY ("id")
);
