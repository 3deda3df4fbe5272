#!/usr/bin/env bash
# After a restore: deep checks of the active database through the API (connect, canary write,
# migrations, replication), then the archiving status of the restored primary.
# Exit 0 only when the verification's overall status is pass and WAL archiving is available and not
# failing; 1 otherwise (a failed check is named; an answer that is not the API's JSON, e.g. {} or an
# HTML page, is a failure). A replica that does not follow the restored primary fails
# replication_status: rebuild it (rebuild-primary.sh), then run this again.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/verify-database-restore.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"
sav3_no_options "$@"
status=0
# The verify route answers 503 with the same report when a check fails: judge the report itself.
verify=$(sav3_call POST /admin/verify/database '{}') || status=$?
echo "$verify"
[ "$status" -le 1 ] || exit "$status"
node -e '
let v;
try { v = JSON.parse(require("fs").readFileSync(0, "utf8")); } catch { v = undefined; }
if (!v || typeof v !== "object" || !["pass", "fail", "degraded"].includes(v.status) || !Array.isArray(v.checks) || v.checks.length === 0) {
  console.error("FAIL: the answer is not a verification report (POST /admin/verify/database)"); process.exit(1);
}
const failed = v.checks.filter((c) => c && c.status === "fail");
for (const c of failed)
  console.error("FAIL: " + c.name + ": " + c.detail + (c.name === "replication_status" ? " (rebuild the replica from the restored primary: scripts/dr/rebuild-primary.sh)" : ""));
if (v.status !== "pass") { if (failed.length === 0) console.error("FAIL: verification status " + v.status); process.exit(1); }
console.error("verification: pass (" + v.checks.map((c) => c.name + " " + c.status).join(", ") + ")");
' <<<"$verify" || exit 1
backups=$(sav3_call GET /admin/backups) || { echo "$backups"; exit 1; }
echo "$backups"
node -e '
let v;
try { v = JSON.parse(require("fs").readFileSync(0, "utf8")); } catch { v = undefined; }
const a = v && typeof v === "object" ? v.archiving : undefined;
if (!a || a.available !== true) { console.error("FAIL: WAL archiving status of the restored primary is unavailable" + (a && a.error ? " (" + a.error + ")" : "")); process.exit(1); }
if (a.failing) { console.error("FAIL: WAL archiving is failing: " + (a.failure && a.failure.message ? a.failure.message + " (" + a.failure.code + ")" : "last failed " + a.lastFailedWal + " at " + a.lastFailedAt)); process.exit(1); }
console.error("archiving: not failing; last archived " + (a.lastArchivedWal ?? "none") + "; RPO exposure " + (a.rpoExposureSeconds ?? "unknown") + " s");
' <<<"$backups"
