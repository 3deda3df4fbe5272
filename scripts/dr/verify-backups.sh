#!/usr/bin/env bash
# The backup inventory: every backup, the WAL archive range, archiving status and RPO exposure.
# Exit 1 when any of these holds (every one found is named): no successful backup; the newest full
# or differential backup older than BACKUP_MAX_AGE (the API's backupAge, the BackupTooOld rule);
# archiving status unavailable or failing; RPO exposure unknown or above SAV3_RPO_MAX_SECONDS (the
# runbook's 5 minutes: 300); an answer that is not the inventory.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/verify-backups.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"
sav3_no_options "$@"
rpo_max=${SAV3_RPO_MAX_SECONDS:-300}
[[ "$rpo_max" =~ ^[0-9]+$ ]] || { echo "SAV3_RPO_MAX_SECONDS must be a whole number of seconds" >&2; exit 2; }
out=$(sav3_call GET /admin/backups) || { echo "$out"; exit 1; }
echo "$out"
node -e '
let v;
try { v = JSON.parse(require("fs").readFileSync(0, "utf8")); } catch { v = undefined; }
if (!v || typeof v !== "object" || !Array.isArray(v.backups)) { console.error("the answer is not the backup inventory (GET /admin/backups)"); process.exit(1); }
const rpoMax = Number(process.argv[1]);
const problems = [];
const good = v.backups.filter((b) => b && !b.error);
if (good.length === 0) problems.push("no successful backup in the repository");
const age = v.backupAge;
if (!age || typeof age.tooOld !== "boolean") problems.push("the API does not say how old the newest full or differential backup is (backupAge)");
else if (age.tooOld)
  problems.push(age.newestFullOrDiff
    ? "the newest full or differential backup " + age.newestFullOrDiff.label + " ended " + age.ageSeconds + " s ago, beyond BACKUP_MAX_AGE (" + age.maxAgeSeconds + " s)"
    : "no successful full or differential backup (BACKUP_MAX_AGE " + age.maxAgeSeconds + " s)");
const a = v.archiving;
if (!a || a.available !== true) problems.push("WAL archiving status is unavailable" + (a && a.error ? " (" + a.error + ")" : "") + ": the RPO cannot be known");
else {
  if (a.failing) problems.push("WAL archiving is failing: " + (a.failure && a.failure.message ? a.failure.message + " (" + a.failure.code + ")" : "last failed " + a.lastFailedWal + " at " + a.lastFailedAt));
  if (typeof a.rpoExposureSeconds !== "number") problems.push("RPO exposure is unknown");
  else if (a.rpoExposureSeconds > rpoMax) problems.push("RPO exposure " + a.rpoExposureSeconds + " s is above " + rpoMax + " s");
}
const newest = good[good.length - 1];
// The newest backup must be recoverable to the end of the archive (a hole, or a branch a
// point-in-time restore abandoned, would stop it); unknown (null) is said, not failed.
if (newest && newest.recovery && newest.recovery.toEndOfArchive === false)
  problems.push("the newest backup " + newest.label + " cannot be recovered to the end of the archive: " + newest.recovery.problem);
else if (newest && newest.recovery === null) console.error("note: the archive was not read for the recovery of the newest backup (unknown)");
console.error("newest backup " + (newest ? newest.label + " ended " + newest.stoppedAt : "none") + "; RPO exposure " + (a && typeof a.rpoExposureSeconds === "number" ? a.rpoExposureSeconds + " s" : "unknown"));
for (const p of problems) console.error("FAIL: " + p);
process.exit(problems.length ? 1 : 0);
' "$rpo_max" <<<"$out"
