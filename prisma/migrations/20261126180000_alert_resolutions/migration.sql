-- Resolved alerts as Alertmanager reported them, whatever the order of delivery: a firing
-- notification that arrives after its alert's resolution (or never before it) opens nothing.
CREATE TABLE "alert_resolutions" (
    "fingerprint" TEXT NOT NULL,
    "starts_at" TEXT NOT NULL,
    "ends_at" TIMESTAMPTZ(3) NOT NULL,
    "group_key" TEXT NOT NULL,
    "alertname" TEXT NOT NULL,
    "detail" JSONB,
    "received_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "alert_resolutions_pkey" PRIMARY KEY ("fingerprint","starts_at")
);
CREATE INDEX "alert_resolutions_fingerprint_ends_at_idx" ON "alert_resolutions"("fingerprint", "ends_at");
CREATE INDEX "alert_resolutions_received_at_idx" ON "alert_resolutions"("received_at");
