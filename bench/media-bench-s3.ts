// The media benchmark's two S3 servers, in a process of their own (as MinIO is in a deployment):
// in the API's process they would take turns with the API on one event loop, which slows only the
// API side of the comparison.
import { startS3Server } from '../support/s3-server.ts';

async function main(): Promise<void> {
  const primary = await startS3Server({ bucket: 'bench-primary' });
  const backup = await startS3Server({ bucket: 'bench-backup' });
  const info = (s: typeof primary) => ({ endpoint: s.endpoint, bucket: s.bucket, accessKey: s.accessKey, secretKey: s.secretKey });
  process.on('disconnect', () => {
    void Promise.all([primary.destroy(), backup.destroy()]).finally(() => process.exit(0));
  });
  process.send?.({ primary: info(primary), backup: info(backup) });
}

void main();
