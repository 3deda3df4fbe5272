import type { ComponentState } from './live-state.ts';

export const HISTORY_DAYS = 90;
const DAY_MS = 86_400_000;

export interface DayState {
  day: string;
  state: ComponentState;
  outageMinutes: number;
  degradedMinutes: number;
}

/** Start (UTC midnight) of the first of the HISTORY_DAYS days ending today. */
export function historyStart(now: number): number {
  return Math.floor(now / DAY_MS) * DAY_MS - (HISTORY_DAYS - 1) * DAY_MS;
}

/**
 * One component's days from its recorded state changes: per UTC day the worst state seen and the
 * minutes spent degraded or out; before the first known state a day is "unknown". Uptime counts
 * degraded time as up and only time with a known state.
 */
export function dailyHistory(initial: ComponentState | null, changes: { at: number; state: ComponentState }[], from: number, now: number) {
  let state = initial;
  const days: DayState[] = [];
  let up = 0;
  let known = 0;
  let k = 0;
  for (let d = 0; d < HISTORY_DAYS; d++) {
    const start = from + d * DAY_MS;
    const end = Math.min(start + DAY_MS, now);
    const spent: Record<ComponentState, number> = { operational: 0, degraded: 0, outage: 0, unknown: 0 };
    let t = start;
    while (t < end) {
      const change = changes[k];
      const next = change && change.at < end ? Math.max(change.at, t) : end;
      if (state !== null) spent[state] += next - t;
      t = next;
      if (change && change.at <= t && t < end) {
        state = change.state;
        k++;
      }
    }
    const measured = spent.operational + spent.degraded + spent.outage;
    up += spent.operational + spent.degraded;
    known += measured;
    days.push({
      day: new Date(start).toISOString().slice(0, 10),
      // The worst state the component spent any time in that day.
      state: (['outage', 'degraded', 'operational'] as const).find((s) => spent[s] > 0) ?? 'unknown',
      outageMinutes: Math.round(spent.outage / 60_000),
      degradedMinutes: Math.round(spent.degraded / 60_000),
    });
  }
  return { days, uptimePercent: known === 0 ? null : Math.round((up / known) * 100_000) / 1000 };
}
