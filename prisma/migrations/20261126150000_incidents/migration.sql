-- CreateTable
CREATE TABLE "incidents" (
    "id" TEXT NOT NULL,
    "severity" TEXT NOT NULL,
    "title" TEXT NOT NULL,
    "summary" TEXT NOT NULL,
    "components" TEXT[],
    "status" TEXT NOT NULL,
    "source" TEXT NOT NULL,
    "alert_group_key" TEXT,
    "created_by" TEXT NOT NULL,
    "roles" JSONB NOT NULL DEFAULT '{}',
    "root_cause" TEXT,
    "started_at" TIMESTAMPTZ(3) NOT NULL,
    "detected_at" TIMESTAMPTZ(3) NOT NULL,
    "acknowledged_at" TIMESTAMPTZ(3),
    "acknowledged_by" TEXT,
    "mitigated_at" TIMESTAMPTZ(3),
    "resolved_at" TIMESTAMPTZ(3),
    "next_update_due_at" TIMESTAMPTZ(3),

    CONSTRAINT "incidents_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "incidents_status_idx" ON "incidents"("status");
CREATE INDEX "incidents_detected_at_idx" ON "incidents"("detected_at" DESC);
-- At most one open incident per Alertmanager group, whatever races between retries and instances.
CREATE UNIQUE INDEX "incidents_open_alert_group_key" ON "incidents"("alert_group_key") WHERE "status" <> 'resolved' AND "alert_group_key" IS NOT NULL;

-- CreateTable
CREATE TABLE "incident_day_counters" (
    "day" TEXT NOT NULL,
    "last" INTEGER NOT NULL,

    CONSTRAINT "incident_day_counters_pkey" PRIMARY KEY ("day")
);

-- CreateTable
CREATE TABLE "incident_updates" (
    "id" UUID NOT NULL,
    "incident_id" TEXT NOT NULL,
    "at" TIMESTAMPTZ(3) NOT NULL,
    "kind" TEXT NOT NULL,
    "visibility" TEXT NOT NULL,
    "status" TEXT,
    "message" TEXT NOT NULL,
    "author" TEXT NOT NULL,
    "detail" JSONB,
    "duration_ms" INTEGER,
    "dedupe_key" TEXT,

    CONSTRAINT "incident_updates_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "incident_updates_incident_id_at_idx" ON "incident_updates"("incident_id", "at");
CREATE UNIQUE INDEX "incident_updates_dedupe_key_key" ON "incident_updates"("dedupe_key");

-- AddForeignKey
ALTER TABLE "incident_updates" ADD CONSTRAINT "incident_updates_incident_id_fkey" FOREIGN KEY ("incident_id") REFERENCES "incidents"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- CreateTable
CREATE TABLE "notification_outbox" (
    "seq" BIGSERIAL NOT NULL,
    "idempotency_key" TEXT NOT NULL,
    "receiver" TEXT NOT NULL,
    "incident_id" TEXT,
    "kind" TEXT NOT NULL,
    "payload" JSONB NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'pending',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "next_attempt_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "claimed_by" TEXT,
    "claimed_until" TIMESTAMPTZ(3),
    "last_error" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "sent_at" TIMESTAMPTZ(3),

    CONSTRAINT "notification_outbox_pkey" PRIMARY KEY ("seq")
);

-- CreateIndex
CREATE UNIQUE INDEX "notification_outbox_idempotency_key_key" ON "notification_outbox"("idempotency_key");
CREATE INDEX "notification_outbox_status_receiver_seq_idx" ON "notification_outbox"("status", "receiver", "seq");

-- CreateTable
CREATE TABLE "component_state_changes" (
    "id" BIGSERIAL NOT NULL,
    "component" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "component_state_changes_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "component_state_changes_component_at_idx" ON "component_state_changes"("component", "at");

-- AlterTable: how long an audited action took, for incident timelines and post-mortems.
ALTER TABLE "audit_events" ADD COLUMN "duration_ms" INTEGER;
