// `npm run drill:restore`: the runbook's corruption scenario on local clusters, timed. Uploads run
// in a loop; a destructive mistake (DELETE without WHERE) removes every media row and replicates;
// scripts/dr/restore-database.sh turns read-only on and restores the primary to just before the
// mistake (run 1: to a restore point, run 2: to a time); read-only is lifted after the checks.
// Checks: every upload acknowledged before the target is back with its content and sha256; every
// upload acknowledged after it is reported by the media consistency pass (content without
// metadata), none silently lost. Prints the RTO (mistake → writes back), restore time and throughput.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { loadConfig } from '../src/config/config.ts';
import { migrate } from '../src/services/database/migrator.ts';
import { createLogger } from '../src/logger.ts';
import { createService } from '../src/service.ts';
import { MIGRATIONS_DIR } from '../src/paths.ts';
import { MinioObjectStore } from '../src/adapters/minio-object-store.ts';
import { startPgCluster } from '../support/pg-cluster.ts';
import { createPgBackRestRepo } from '../support/pgbackrest-repo.ts';
import { mediaEnv, startS3Server } from '../support/s3-server.ts';
import { sha256Hex } from '../support/common.ts';

interface Upload {
  key: string;
  sha: string;
  sentAt: number;
  ackedAt: number;
}

function uploadLoop(base: string, prefix: string) {
  const acked: Upload[] = [];
  let running = true;
  let n = 0;
  const done = (async () => {
    while (running) {
      const key = `${prefix}-${(n += 1)}`;
      const body = randomBytes(4096);
      const sentAt = Date.now();
      const res = await fetch(`${base}/media/${key}`, { method: 'PUT', body }).catch(() => undefined);
      if (res?.status === 201) acked.push({ key, sha: sha256Hex(body), sentAt, ackedAt: Date.now() });
      await res?.arrayBuffer().catch(() => undefined);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return {
    acked,
    firstAckAfter: async (t: number, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = acked.find((u) => u.sentAt >= t);
        if (hit) return hit.ackedAt;
        if (Date.now() > deadline) return NaN;
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    stop: async () => {
      running = false;
      await done;
    },
  };
}

function restoreScript(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      [join(__dirname, 'dr', 'restore-database.sh'), ...args],
      { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

async function sql(url: string, text: string, params: unknown[] = []) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text, params)).rows;
  } finally {
    await client.end();
  }
}

async function main(): Promise<void> {
  const cluster = await startPgCluster();
  const repo = await createPgBackRestRepo(cluster.primary, cluster.dir);
  const s3 = await startS3Server({ bucket: 'drill-restore' });
  const token = randomBytes(24).toString('base64url');
  await migrate(cluster.primary.url(), MIGRATIONS_DIR);
  const service = await createService(
    loadConfig({
      DATABASE_URL: cluster.primary.url(),
      REDIS_URL: process.env.REDIS_URL,
      ...mediaEnv('PRIMARY', s3),
      ADMIN_TOKENS: `drill:operator:${token}`,
      PORT: '0',
      HOST: '127.0.0.1',
      HEALTH_TIMEOUT_MS: '500',
      MEDIA_CACHE_TTL_SECONDS: '1',
      INSTANCE_ID: 'drill-restore',
    }),
    createLogger('silent'),
    { redisKeyPrefix: `drill-restore:${Date.now()}:` },
  );
  let failures = 0;
  const store = new MinioObjectStore(loadConfig({ DATABASE_URL: cluster.primary.url(), ...mediaEnv('PRIMARY', s3) }).mediaPrimary);
  try {
    const base = `http://127.0.0.1:${(await service.listen()).port}`;
    const env = {
      SAV3_API_URL: base,
      SAV3_ADMIN_TOKEN: token,
      DATABASE_URL: cluster.primary.url(),
      PGDATA: cluster.primary.dataDir,
      ...repo.env,
      ...mediaEnv('PRIMARY', s3),
    };
    const admin = (method: string, path: string, body?: unknown) =>
      fetch(`${base}${path}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    const uploads = uploadLoop(base, 'drill/restore');
    await new Promise((r) => setTimeout(r, 1000));
    await repo.exec(['backup', '--type=full']);
    const backupBytes = Number(JSON.parse(await repo.exec(['info', '--output=json']))[0].backup[0].info.size);

    // Uploads a previous run's restore legitimately dropped (reported then): not expected back.
    const lostEarlier = new Set<string>();
    for (const mode of ['name', 'time'] as const) {
      await new Promise((r) => setTimeout(r, 1000));
      // The target: a restore point, or a time, taken while uploads run.
      let target: string;
      const targetAt = Date.now();
      if (mode === 'name') {
        target = `drill-before-mistake-${Date.now()}`;
        const res = await admin('POST', '/admin/database/restore-point', { name: target });
        if (res.status !== 201) throw new Error(`restore point: HTTP ${res.status}`);
      } else {
        target = new Date(targetAt).toISOString();
      }
      const targetDoneAt = Date.now();
      await new Promise((r) => setTimeout(r, 500));
      // The mistake: a DELETE without WHERE, replicated at once.
      const mistakeAt = Date.now();
      await sql(cluster.primary.url(), 'DELETE FROM media_objects');
      // The replica copies the mistake within moments: it cannot bring the rows back (run 1 only:
      // the restore puts the primary on a new timeline, and the replica must be rebuilt after it).
      let replicaRows: number | null = null;
      if (mode === 'name') {
        await new Promise((r) => setTimeout(r, 300));
        replicaRows = Number((await sql(cluster.replica.url(), 'SELECT count(*)::int AS n FROM media_objects'))[0].n);
      }
      await sql(cluster.primary.url(), 'SELECT pg_switch_wal()');
      await repo.exec(['check']);
      const runStartedAt = Date.now();
      const run = await restoreScript(
        ['--from-backup', 'latest', mode === 'name' ? '--target-name' : '--target-time', target, '--confirm'],
        env,
      );
      if (run.code !== 0) throw new Error(`restore-database.sh exited ${run.code}: ${run.stderr}\n${run.stdout}`);
      const lifted = await admin('PUT', '/admin/read-only', { enabled: false, reason: 'drill: restored' });
      if (lifted.status !== 200) throw new Error(`read-only off: HTTP ${lifted.status}`);
      const writesBackAt = await uploads.firstAckAfter(Date.now(), 20_000);
      const restoreMs = Number(/step: pgbackrest restore (\d+) ms/.exec(run.stdout)?.[1]);
      // The media pass lists content without metadata by object name (content is stored under its
      // version): read each one back and match uploads by sha256.
      const orphanShas = new Set<string>();
      for (const line of run.stdout.split('\n').filter((l) => l.startsWith('media-orphan: '))) {
        const { object } = JSON.parse(line.slice(14)) as { object: string };
        const chunks: Buffer[] = [];
        for await (const c of await store.get(object)) chunks.push(c as Buffer);
        orphanShas.add(sha256Hex(Buffer.concat(chunks)));
      }

      // A client retries a 503 (Retry-After), as the API asks; a 404 or wrong content is a loss.
      const readsBack = async (u: Upload) => {
        for (let attempt = 1; ; attempt += 1) {
          const res = await fetch(`${base}/media/${u.key}`);
          const body = Buffer.from(await res.arrayBuffer());
          if (res.status === 503 && attempt < 5) {
            await new Promise((r) => setTimeout(r, 200 * attempt));
            continue;
          }
          return res.status === 200 && sha256Hex(body) === u.sha;
        }
      };
      // Every upload acknowledged before the target must read back intact.
      const before = uploads.acked.filter((u) => u.ackedAt < targetAt && !lostEarlier.has(u.key));
      let missing = 0;
      for (const u of before) if (!(await readsBack(u))) missing += 1;
      // Every upload acknowledged after the target, before the restore began, is reported.
      const after = uploads.acked.filter((u) => u.sentAt > targetDoneAt && u.ackedAt < runStartedAt);
      const unreportedList = after.filter((u) => !orphanShas.has(u.sha));
      // In flight around the target or the start of read-only: back intact, or reported.
      const ambiguous = uploads.acked.filter(
        (u) => !before.includes(u) && !after.includes(u) && !lostEarlier.has(u.key) && u.sentAt < writesBackAt && u.ackedAt >= targetAt - 1,
      );
      let ambiguousLost = 0;
      for (const u of ambiguous) {
        if (orphanShas.has(u.sha) || (await readsBack(u))) continue;
        ambiguousLost += 1;
        if (process.env.DRILL_DEBUG) {
          const status = (await fetch(`${base}/media/${u.key}`)).status;
          console.log('lost in flight', u.key, {
            sent: u.sentAt - targetAt,
            acked: u.ackedAt - targetAt,
            runStart: runStartedAt - targetAt,
            writesBack: writesBackAt - targetAt,
            status,
          });
        }
      }
      for (const u of uploads.acked) if (orphanShas.has(u.sha)) lostEarlier.add(u.key);
      const unreported = unreportedList.length + ambiguousLost;
      const rtoMs = writesBackAt - mistakeAt;
      const report = {
        run: mode === 'name' ? 'restore point' : 'time',
        target,
        ...(replicaRows === null ? {} : { replicaRowsAfterMistake: replicaRows }),
        uploadsBeforeTarget: before.length,
        missingOrCorrupt: missing,
        uploadsAfterTarget: after.length,
        reportedAfterTarget: after.length - unreportedList.length,
        inFlightAtBoundaries: ambiguous.length,
        unreportedAfterTarget: unreported,
        rtoSeconds: Number((rtoMs / 1000).toFixed(2)),
        restoreSeconds: Number((restoreMs / 1000).toFixed(2)),
        restoreThroughputMBps: Number((backupBytes / 1e6 / (restoreMs / 1000)).toFixed(1)),
        steps: run.stdout
          .split('\n')
          .filter((l) => l.startsWith('step: '))
          .map((l) => l.slice(6)),
      };
      console.log(JSON.stringify(report, null, 2));
      if (missing > 0 || unreported > 0 || Number.isNaN(rtoMs)) failures += 1;
    }
    await uploads.stop();
  } finally {
    await service.stop();
    store.close();
    await s3.destroy();
    await cluster.destroy();
    repo.destroy();
  }
  console.log(failures === 0 ? 'drill passed' : `drill FAILED in ${failures} run(s)`);
  process.exit(failures === 0 ? 0 : 1);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
