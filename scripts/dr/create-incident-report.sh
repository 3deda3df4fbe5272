#!/usr/bin/env bash
# Opens an incident and prints its initial notification (the runbook template, filled in); the
# same text goes to NOTIFY_WEBHOOK_URLS. With --incident-id, prints that incident's report
# (the post-mortem draft with its timeline so far) instead.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/create-incident-report.sh --title T --summary S
#       [--severity auto|P0|P1|P2|P3] [--components database,api,media-uploads,media-downloads] [--eta TEXT]
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/create-incident-report.sh --incident-id INC-YYYYMMDD-N
set -euo pipefail
. "$(dirname "$0")/lib.sh"
severity=auto title="" summary="" components="" eta="" id=""
while [ $# -gt 0 ]; do
  case "$1" in
    --severity) severity=$2; shift 2 ;;
    --title) title=$2; shift 2 ;;
    --summary) summary=$2; shift 2 ;;
    --components) components=$2; shift 2 ;;
    --eta) eta=$2; shift 2 ;;
    --incident-id) id=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -n "$id" ]; then
  sav3_call GET "/admin/incidents/$id/postmortem"
  exit $?
fi
[ -n "$title" ] || { echo "--title is required" >&2; exit 2; }
if [ "$severity" = auto ]; then
  assessment=$(sav3_call POST /admin/incidents/assess '{}') || { echo "$assessment"; exit 1; }
  severity=$(printf '%s' "$assessment" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).severity??""))')
  reason=$(printf '%s' "$assessment" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).reason))')
  [ -n "$severity" ] || { echo "assessment proposes no incident: $reason (give --severity to open one anyway)" >&2; exit 1; }
  echo "severity $severity from the assessment: $reason" >&2
fi
body=$(node -e '
const [severity, title, summary, components, eta] = process.argv.slice(1);
const b = { severity, title, summary: summary || title, components: components ? components.split(",") : [] };
if (eta) b.eta = eta;
process.stdout.write(JSON.stringify(b));' "$severity" "$title" "$summary" "$components" "$eta")
answer=$(sav3_call POST /admin/incidents "$body") || { echo "$answer"; exit 1; }
printf '%s' "$answer" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const i=JSON.parse(s);process.stdout.write(`${i.id}\n\n${i.initialNotification}\n`)})'
