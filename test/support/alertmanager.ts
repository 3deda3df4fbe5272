import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../support/common.ts';

const run = promisify(execFile);

export interface Alertmanager {
  url: string;
  dir: string;
  /** Fires (or, with `end`, resolves) an alert with amtool. */
  alert(labels: Record<string, string>, opts?: { annotations?: Record<string, string>; end?: Date; start?: Date }): Promise<void>;
  metric(name: string): Promise<number>;
  stop(): Promise<void>;
}

/** A real Alertmanager (Debian prometheus-alertmanager) with its own config, port and storage. */
export async function startAlertmanager(config: (dir: string) => string): Promise<Alertmanager> {
  const dir = await mkdtemp(join(tmpdir(), 'sav3-am-'));
  const port = await freePort();
  await writeFile(join(dir, 'alertmanager.yml'), config(dir));
  const child: ChildProcess = spawn(
    'prometheus-alertmanager',
    [
      `--config.file=${join(dir, 'alertmanager.yml')}`,
      `--storage.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--cluster.listen-address=',
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ready = await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`alertmanager did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    dir,
    async alert(labels, opts = {}) {
      const args = ['alert', 'add', `--alertmanager.url=${url}`, ...Object.entries(labels).map(([k, v]) => `${k}=${v}`)];
      for (const [k, v] of Object.entries(opts.annotations ?? {})) args.push(`--annotation=${k}=${v}`);
      if (opts.start) args.push(`--start=${opts.start.toISOString().replace(/\.\d+Z$/, 'Z')}`);
      if (opts.end) args.push(`--end=${opts.end.toISOString().replace(/\.\d+Z$/, 'Z')}`);
      await run('amtool', args);
    },
    async metric(name) {
      const text = await (await fetch(`${url}/metrics`)).text();
      return text
        .split('\n')
        .filter((l) => l.startsWith(name))
        .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
