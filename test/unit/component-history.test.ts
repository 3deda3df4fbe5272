import { dailyHistory, HISTORY_DAYS, historyStart } from '../../src/services/incidents/component-history.ts';

const DAY = 86_400_000;
const MIN = 60_000;

describe('status page history from recorded state changes', () => {
  const now = Date.parse('2026-11-26T12:00:00Z');
  const from = historyStart(now);

  it('covers 90 UTC days ending today', () => {
    const { days } = dailyHistory(null, [], from, now);
    expect(days).toHaveLength(HISTORY_DAYS);
    expect(days[0]!.day).toBe('2026-08-29');
    expect(days.at(-1)!.day).toBe('2026-11-26');
    expect(days.every((d) => d.state === 'unknown')).toBe(true);
  });

  it('days before the first known state are unknown and do not count against uptime', () => {
    const changes = [{ at: Date.parse('2026-11-25T00:00:00Z'), state: 'operational' as const }];
    const { days, uptimePercent } = dailyHistory(null, changes, from, now);
    expect(days.slice(0, 88).every((d) => d.state === 'unknown')).toBe(true);
    expect(days.slice(88).map((d) => d.state)).toEqual(['operational', 'operational']);
    expect(uptimePercent).toBe(100);
  });

  it('a 30-minute outage marks its day, counts its minutes, and lowers uptime by exactly that share', () => {
    const changes = [
      { at: Date.parse('2026-11-24T10:00:00Z'), state: 'outage' as const },
      { at: Date.parse('2026-11-24T10:30:00Z'), state: 'operational' as const },
      { at: Date.parse('2026-11-25T23:50:00Z'), state: 'degraded' as const },
      { at: Date.parse('2026-11-26T00:20:00Z'), state: 'operational' as const },
    ];
    const { days, uptimePercent } = dailyHistory('operational', changes, from, now);
    const byDay = Object.fromEntries(days.map((d) => [d.day, d]));
    expect(byDay['2026-11-23']).toMatchObject({ state: 'operational', outageMinutes: 0 });
    expect(byDay['2026-11-24']).toMatchObject({ state: 'outage', outageMinutes: 30, degradedMinutes: 0 });
    // Degraded across midnight: 10 minutes on one day, 20 on the next.
    expect(byDay['2026-11-25']).toMatchObject({ state: 'degraded', degradedMinutes: 10 });
    expect(byDay['2026-11-26']).toMatchObject({ state: 'degraded', degradedMinutes: 20 });
    const total = now - from;
    expect(uptimePercent).toBe(Math.round(((total - 30 * MIN) / total) * 100_000) / 1000);
  });

  it('a state that began before the window carries into it', () => {
    const { days } = dailyHistory('outage', [{ at: from + 2 * DAY, state: 'operational' }], from, now);
    expect(days.slice(0, 3).map((d) => [d.state, d.outageMinutes])).toEqual([
      ['outage', 1440],
      ['outage', 1440],
      ['operational', 0],
    ]);
  });
});
