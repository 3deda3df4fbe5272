-- At most one open incident per Alertmanager group key, indexed by the key's MD5 digest: a btree
-- entry holds at most about 2.7 kB, and a group key (all of a group's labels) may be longer. With
-- the key itself indexed, a long key failed every insert (503, retried by Alertmanager forever).
DROP INDEX IF EXISTS "incidents_open_alert_group_key";
CREATE UNIQUE INDEX "incidents_open_alert_group_key_md5" ON "incidents" (md5("alert_group_key"))
  WHERE "status" <> 'resolved' AND "alert_group_key" IS NOT NULL;
