// The public status page: server-rendered HTML that works without JavaScript; a small external
// script (the CSP allows only same-origin scripts) refreshes it on server-sent events.
import type { ComponentState } from './live-state.ts';
import type { StatusSnapshot } from './status-service.ts';

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

const LABEL: Record<ComponentState, string> = { operational: 'Operational', degraded: 'Degraded', outage: 'Outage', unknown: 'Unknown' };
const HEADLINE: Record<StatusSnapshot['status'], string> = {
  operational: 'All systems operational',
  degraded: 'Some systems are degraded or under investigation',
  outage: 'Some systems are unavailable',
  unknown: 'Status unknown',
};

const STYLE = `
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}
header,main,footer{max-width:52rem;margin:0 auto;padding:1rem 1.25rem}
h1{font-size:1.5rem;margin:.5rem 0}h2{font-size:1.15rem;margin:1.5rem 0 .5rem}h3{font-size:1rem;margin:.25rem 0}
.banner{padding:.9rem 1rem;border-radius:.4rem;font-weight:600;color:#fff}
.s-operational{background:#1e6b34}.s-degraded{background:#8a4b00}.s-outage{background:#a11c1c}.s-unknown{background:#4a4f57}
ul.components{list-style:none;padding:0;margin:0;background:#fff;border:1px solid #d5d9de;border-radius:.4rem}
ul.components li{display:flex;justify-content:space-between;padding:.7rem 1rem;border-top:1px solid #e4e7eb}
ul.components li:first-child{border-top:0}
.state{font-weight:600}.t-operational{color:#1e6b34}.t-degraded{color:#8a4b00}.t-outage{color:#a11c1c}.t-unknown{color:#4a4f57}
article{background:#fff;border:1px solid #d5d9de;border-radius:.4rem;padding:.8rem 1rem;margin-bottom:.8rem}
ol.updates{padding-left:1.1rem;margin:.5rem 0 0}ol.updates li{margin:.35rem 0}
.meta{color:#4a4f57;font-size:.9rem}
.bars{display:flex;gap:2px;margin:.3rem 0 .2rem}.bars span{flex:1;height:1.6rem;border-radius:2px}
.b-operational{background:#2f9e55}.b-degraded{background:#d98b1c}.b-outage{background:#c62828}.b-unknown{background:#c3c8ce}
.history{background:#fff;border:1px solid #d5d9de;border-radius:.4rem;padding:.6rem 1rem;margin-bottom:.6rem}
.row{display:flex;justify-content:space-between}
`;

function time(iso: string): string {
  return `<time datetime="${esc(iso)}">${esc(iso.replace('T', ' ').slice(0, 16))} UTC</time>`;
}

export function renderStatusPage(s: StatusSnapshot): string {
  const components = s.components
    .map(
      (c) =>
        `<li><span>${esc(c.name)}${c.incidents.length > 0 ? ` <span class="meta">(open incident)</span>` : ''}</span><span class="state t-${c.state}">${LABEL[c.state]}</span></li>`,
    )
    .join('');
  let incidents: string;
  if (s.incidents === null) {
    incidents = '<p>Incident information is unavailable right now: the state is unknown. This page updates when it returns.</p>';
  } else if (s.incidents.length === 0 && s.moreIncidents.length === 0) {
    incidents = '<p>No open incidents.</p>';
  } else {
    incidents = s.incidents
      .map(
        (i) => `<article aria-labelledby="${esc(i.id)}-title"><h3 id="${esc(i.id)}-title">${esc(i.title)}</h3>
<p class="meta">${esc(i.id)} · ${esc(i.severity)} · ${esc(i.status)} · since ${time(i.startedAt)}</p>
<ol class="updates">${i.updates.map((u) => `<li>${time(u.at)}${u.status ? ` <strong>${esc(u.status)}</strong>` : ''}: ${esc(u.message)}</li>`).join('')}</ol></article>`,
      )
      .join('');
    if (s.moreIncidents.length > 0)
      incidents += `<p class="more">${s.moreIncidents.map((m) => `And ${m.count} more open ${esc(m.severity)} incident${m.count === 1 ? '' : 's'}.`).join(' ')}</p>`;
  }
  let history: string;
  if (s.history === null) {
    history = '<p>History is unavailable right now: the state is unknown.</p>';
  } else {
    history = s.history
      .map((h) => {
        const bad = h.days.filter((d) => d.state === 'outage').length;
        const label = `${h.name}: ${h.uptimePercent === null ? 'no data' : `${h.uptimePercent}% available`} over the last ${h.days.length} days; ${bad} day${bad === 1 ? '' : 's'} with an outage`;
        const bars = h.days
          .map(
            (d) =>
              `<span class="b-${d.state}" title="${esc(d.day)}: ${LABEL[d.state]}${d.outageMinutes ? `, ${d.outageMinutes} min outage` : ''}"></span>`,
          )
          .join('');
        return `<div class="history"><div class="row"><span>${esc(h.name)}</span><span class="meta">${h.uptimePercent === null ? 'no data' : `${h.uptimePercent}%`}</span></div><div class="bars" role="img" aria-label="${esc(label)}">${bars}</div></div>`;
      })
      .join('');
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>SAV3 status</title><link rel="icon" href="data:,"><style>${STYLE}</style><script src="/status/status.js" defer></script></head>
<body><header><h1>SAV3 status</h1></header>
<main id="status" data-updated="${esc(s.updatedAt)}">
<p class="banner s-${s.status}" role="status">${HEADLINE[s.status]}</p>
<section aria-labelledby="h-components"><h2 id="h-components">Components</h2><ul class="components">${components}</ul></section>
<section aria-labelledby="h-incidents"><h2 id="h-incidents">Open incidents</h2>${incidents}</section>
<section aria-labelledby="h-history"><h2 id="h-history">Past 90 days</h2>${history}</section>
<p class="meta">Updated ${time(s.updatedAt)}. Machine-readable: <a href="/status.json">/status.json</a>.</p>
</main><footer class="meta">This page refreshes itself; without JavaScript, reload it for the latest state.</footer></body></html>`;
}

/** Replaces <main> with a fresh rendering whenever the server says the status changed. */
export const STATUS_SCRIPT = `(function () {
  if (!window.EventSource || !window.fetch || !window.DOMParser) return;
  var pending = false;
  function refresh() {
    if (pending) return;
    pending = true;
    fetch('/status', { headers: { accept: 'text/html' }, cache: 'no-store' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        pending = false;
        if (!html) return;
        var next = new DOMParser().parseFromString(html, 'text/html').querySelector('main');
        var current = document.querySelector('main');
        if (next && current) current.replaceWith(next);
      })
      .catch(function () { pending = false; });
  }
  var events = new EventSource('/status/events');
  events.addEventListener('status', refresh);
})();
`;
