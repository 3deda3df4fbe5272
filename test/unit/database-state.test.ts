import { withActiveDatabase, withNodeRecorded, withPromotionRecorded } from '../../src/services/dr-state/database-state.ts';
import { INITIAL_STATE, type DrState, type NodeIdentity } from '../../src/services/dr-state/dr-state.ts';

const NOW = '2026-01-01T00:00:00.000Z';
const id = (timeline: number, systemId = 'sys-1'): NodeIdentity => ({ systemId, timeline, recordedAt: NOW });
const state = (database: Partial<DrState['database']> = {}): DrState => ({
  ...INITIAL_STATE,
  database: { ...INITIAL_STATE.database, ...database },
});

describe('withActiveDatabase: the one writable primary rule', () => {
  it('a writable target is recorded and raises the newest timeline', () => {
    const after = withActiveDatabase(state({ newestTimeline: 1 }), 'replica', id(2), { inRecovery: false, by: 'op', now: NOW });
    expect(after.database).toMatchObject({ active: 'replica', since: NOW, by: 'op', newestTimeline: 2, nodes: { replica: id(2) } });
  });

  it('never lowers the newest timeline', () => {
    const after = withActiveDatabase(state({ newestTimeline: 3 }), 'primary', id(2), { inRecovery: false, by: 'op', now: NOW });
    expect(after.database.newestTimeline).toBe(3);
  });

  it('a standby is recorded but never moves the newest timeline', () => {
    const after = withActiveDatabase(state({ newestTimeline: 1 }), 'replica', id(5), { inRecovery: true, by: 'op', now: NOW });
    expect(after.database).toMatchObject({ active: 'replica', newestTimeline: 1, nodes: { replica: id(5) } });
    const fresh = withActiveDatabase(state(), 'replica', id(5), { inRecovery: true, by: 'op', now: NOW });
    expect(fresh.database.newestTimeline).toBeUndefined();
  });

  it('a node of unknown role never moves the newest timeline, nor does a switch without an identity', () => {
    expect(
      withActiveDatabase(state({ newestTimeline: 1 }), 'replica', id(4), { inRecovery: null, by: 'op', now: NOW }).database.newestTimeline,
    ).toBe(1);
    const bare = withActiveDatabase(state({ newestTimeline: 1, nodes: { primary: id(1) } }), 'replica', null, {
      inRecovery: false,
      by: 'auto',
      now: NOW,
    });
    expect(bare.database).toEqual({ active: 'replica', since: NOW, by: 'auto', newestTimeline: 1, nodes: { primary: id(1) } });
  });

  it('a switch after a promotion records it and drops the abandoned record of that timeline only', () => {
    const abandoned = [
      { systemId: 'sys-1', timeline: 2, node: 'replica' as const, at: NOW },
      { systemId: 'sys-1', timeline: 3, node: 'replica' as const, at: NOW },
    ];
    const after = withActiveDatabase(state({ abandonedTimelines: abandoned }), 'replica', id(2), {
      inRecovery: false,
      by: 'op',
      now: NOW,
      promoted: true,
    });
    expect(after.database.promotedAt).toBe(NOW);
    expect(after.database.abandonedTimelines).toEqual([abandoned[1]]);
    // A standby is no promoted node: the abandoned record stays.
    const standby = withActiveDatabase(state({ abandonedTimelines: abandoned }), 'replica', id(2), {
      inRecovery: true,
      by: 'op',
      now: NOW,
      promoted: true,
    });
    expect(standby.database.abandonedTimelines).toEqual(abandoned);
  });

  it('leaves the rest of the state and the input untouched', () => {
    const before = state({ newestTimeline: 1 });
    const copy = structuredClone(before);
    const after = withActiveDatabase(before, 'replica', id(2), { inRecovery: false, by: 'op', now: NOW });
    expect(before).toEqual(copy);
    expect(after.readOnly).toBe(before.readOnly);
    expect(after.media).toBe(before.media);
  });
});

describe('withNodeRecorded / withPromotionRecorded', () => {
  it('records a node without changing the active target', () => {
    const db = withNodeRecorded(state().database, 'primary', id(1), { inRecovery: false });
    expect(db).toMatchObject({ active: 'primary', nodes: { primary: id(1) }, newestTimeline: 1 });
    expect(withNodeRecorded(db, 'replica', null, { inRecovery: false })).toBe(db);
  });

  it('sets promotedAt even without an identity', () => {
    expect(withPromotionRecorded(state().database, null, { inRecovery: null }, NOW).promotedAt).toBe(NOW);
  });
});
