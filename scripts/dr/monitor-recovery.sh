#!/usr/bin/env bash
# Follows recovery live (GET /admin/events, server-sent events): DR state changes, job progress,
# health transitions and, with --incident-id, that incident's updates and timeline. One line per
# event. Ends when the incident is resolved (exit 0), the stream ends (exit 1) or the API cannot be
# reached or is lost (exit 3).
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/monitor-recovery.sh [--incident-id INC-YYYYMMDD-N]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
id=""
while [ $# -gt 0 ]; do
  case "$1" in
    --incident-id) sav3_need "$@"; id=$2; shift 2 ;;
    -h|--help) sav3_usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "${SAV3_ADMIN_TOKEN:-}" ] || { echo "SAV3_ADMIN_TOKEN is not set (a viewer token is enough)" >&2; exit 2; }
case "$id" in ""|INC-[0-9]*) ;; *) echo "--incident-id must look like INC-YYYYMMDD-N" >&2; exit 2 ;; esac
# node reads the token from the environment (never from its command line) and follows the stream.
exec node -e '
const id = process.argv[1];
const url = `${(process.env.SAV3_API_URL || "http://127.0.0.1:3000").replace(/\/$/, "")}/admin/events${id ? `?incidentId=${id}` : ""}`;
// Texts from the API (titles, updates, alert labels) are shown, never obeyed by the terminal:
// control characters (ESC sequences, carriage returns, line breaks) and BiDi controls as visible escapes.
function safe(s) {
  return String(s).replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const n = c.codePointAt(0);
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, "0")}` : `\\u${n.toString(16).padStart(4, "0")}`;
  });
}
function line(e) {
  const d = e.data ?? {};
  if (e.type === "dr.state") return `version ${d.version}: read-only ${d.readOnly?.enabled ? "on" : "off"}, database ${d.database?.active}, media ${d.media?.active}`;
  if (e.type === "job.progress") return `job ${d.id}: ${d.status} ${d.copied}/${d.toCopy}`;
  if (e.type === "health.transition") return Object.entries(d.components ?? {}).map(([c, t]) => `${c} ${t.from ?? "?"} -> ${t.to}`).join(", ");
  if (e.type === "incident.opened") return `${d.id} opened: [${d.severity}] ${d.title}`;
  if (e.type === "incident.updated") return `${d.incident?.id} ${d.incident?.status}${d.update ? `: ${d.update.message}` : ""}`;
  if (e.type === "incident.timeline") return `${e.incidentId}: ${d.action ? `${d.action} ${d.result}${d.durationMs != null ? ` (${d.durationMs} ms)` : ""}` : (d.alert ?? d.message ?? "")}`;
  return JSON.stringify(d);
}
// Every way out below calls process.exit, so an empty event loop means a wait nothing can end
// (Node 20 fetch can leave a request whose connection was reset unsettled): that is a lost
// connection (exit 3), never the 0 of a resolved incident.
process.on("beforeExit", () => {
  process.stderr.write(`lost the connection to ${process.env.SAV3_API_URL || "http://127.0.0.1:3000"}\n`);
  process.exit(3);
});
(async () => {
  let res;
  try {
    res = await fetch(url, { headers: { Authorization: `Bearer ${process.env.SAV3_ADMIN_TOKEN}`, Accept: "text/event-stream" } });
  } catch {
    process.stderr.write(`could not reach ${process.env.SAV3_API_URL}\n`);
    process.exit(3);
  }
  if (!res.ok) {
    process.stderr.write(`HTTP ${res.status}: ${safe(await res.text())}\n`);
    process.exit(1);
  }
  process.stderr.write(`following ${id || "all DR events"}; Ctrl-C to stop\n`);
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("");
      if (!data) continue;
      const e = JSON.parse(data);
      if (!e.type) continue;
      process.stdout.write(`${safe(`${e.at} ${e.instanceId} ${e.type} ${line(e)}`)}\n`);
      const d = e.data ?? {};
      if (id && e.type === "incident.updated" && d.incident?.id === id && d.incident?.status === "resolved") process.exit(0);
    }
  }
  process.stderr.write("the event stream ended\n");
  process.exit(1);
})();
' "$id"
