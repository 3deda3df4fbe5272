// `npm run drill:media`: the runbook's media scenario, timed. Uploads run in a loop; the primary S3
// server stops; the runbook scripts switch to the backup; the primary comes back; sync copies what
// it lacks; media switches back and a last sync catches the uploads made meanwhile. Prints the RTO
// (stop to the first accepted upload), the uploads refused meanwhile, and proves every acknowledged
// upload is readable from the primary alone at the end, with its sha256.
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config/config.ts';
import { createLogger } from '../src/logger.ts';
import { createService } from '../src/service.ts';
import { countUnreadable, refusalSummary, runbookScript, startUploadLoop } from '../support/drill.ts';
import { mediaEnv, startS3Server } from '../support/s3-server.ts';
import { createScratchDatabase } from '../support/scratch-database.ts';

async function main(): Promise<void> {
  const db = await createScratchDatabase('sav3_drill_media');
  const primary = await startS3Server({ bucket: 'drill-primary' });
  const backup = await startS3Server({ bucket: 'drill-backup' });
  const token = randomBytes(24).toString('base64url');
  const service = await createService(
    loadConfig({
      DATABASE_URL: db.url,
      REDIS_URL: process.env.REDIS_URL,
      ...mediaEnv('PRIMARY', primary),
      ...mediaEnv('BACKUP', backup),
      ADMIN_TOKENS: `drill:operator:${token}`,
      PORT: '0',
      HOST: '127.0.0.1',
      MEDIA_SYNC_INLINE_MAX: '10',
      INSTANCE_ID: 'drill-media-1',
      DR_STATE_FILE: join(tmpdir(), `sav3-drill-media-${process.pid}.json`),
    }),
    createLogger('silent'),
    { redisKeyPrefix: `drill-media:${Date.now()}:` },
  );
  try {
    const base = `http://127.0.0.1:${(await service.listen()).port}`;
    const script = (name: string, args: string[]) => runbookScript(base, token, name, args);
    const uploads = startUploadLoop(base, 'drill/media', 4096);

    await new Promise((r) => setTimeout(r, 1000));
    const beforeStop = uploads.acked.size;
    await primary.stop();
    const stoppedAt = uploads.disaster();
    const steps: [string, number][] = [];
    steps.push(['switch-media-backend.sh --to s3-backup', await script('switch-media-backend.sh', ['--to', 's3-backup'])]);
    const rtoMs = Math.round((await uploads.firstAcceptedAfterDisaster(10_000)) - stoppedAt);
    await new Promise((r) => setTimeout(r, 1000));
    await primary.start();
    steps.push([
      'sync-media-files.sh --from backup --to primary',
      await script('sync-media-files.sh', ['--from', 'backup', '--to', 'primary']),
    ]);
    steps.push(['switch-media-backend.sh --to minio', await script('switch-media-backend.sh', ['--to', 'minio'])]);
    await new Promise((r) => setTimeout(r, 500));
    await uploads.stop();
    steps.push(['sync-media-files.sh (catch-up)', await script('sync-media-files.sh', ['--from', 'backup', '--to', 'primary'])]);

    // The proof: with the backup gone, every acknowledged upload comes from the primary intact.
    await backup.stop();
    const missing = await countUnreadable(base, uploads.acked, 'primary');
    const { byCode, withoutRetryAfter } = refusalSummary(uploads.refused);
    console.log('\nMedia failover drill');
    for (const [name, ms] of steps) console.log(`  ${name.padEnd(48)} ${String(ms).padStart(6)} ms`);
    console.log(`  RTO (primary S3 stopped → first accepted upload)  ${String(rtoMs).padStart(6)} ms`);
    console.log(`  uploads acknowledged: ${uploads.acked.size} (${beforeStop} before the stop)`);
    console.log(
      `  uploads refused meanwhile: ${uploads.refused.length} ${JSON.stringify(byCode)}; without 503 + Retry-After: ${withoutRetryAfter}`,
    );
    console.log(`  acknowledged uploads not readable from the primary with their sha256: ${missing}`);
    const ok = missing === 0 && withoutRetryAfter === 0 && Number.isFinite(rtoMs);
    console.log(ok ? '\ndrill passed' : '\ndrill FAILED');
    process.exitCode = ok ? 0 : 1;
  } finally {
    await service.stop();
    await primary.destroy();
    await backup.destroy();
    await db.drop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
