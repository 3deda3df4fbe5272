import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import axe from 'axe-core';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import request from 'supertest';
import { createScratchDatabase, type ScratchDatabase } from '../../support/scratch-database.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, type TestInstance } from '../support/instance.ts';

const op = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
// Page-side code as strings: the test compiles without the DOM library.
const mainIncludes = (text: string) => `document.querySelector('main')?.textContent?.includes(${JSON.stringify(text)})`;
// The README's screenshot is refreshed only when asked (UPDATE_SCREENSHOT=1), so a test run never
// leaves a tracked file changed; otherwise the screenshot goes to the ignored .scratch/.
export const SCREENSHOT = process.env.UPDATE_SCREENSHOT
  ? join(__dirname, '..', '..', 'docs', 'status-page.png')
  : join(__dirname, '..', '..', '.scratch', 'status-page.png');

describe('status page in real headless Chromium', () => {
  let s3: S3ServerHandle;
  let db: ScratchDatabase;
  let api: TestInstance;
  let browser: Browser;
  let profile: string;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'browser-media' });
    db = await createScratchDatabase('sav3_browser');
    // A generous probe timeout: the page must not flap because a loaded machine slowed a probe.
    api = await startInstance({ ...mediaEnv('PRIMARY', s3), DATABASE_URL: db.url, HEALTH_TIMEOUT_MS: '2000' });
    profile = await mkdtemp(join(tmpdir(), 'sav3-chromium-'));
    browser = await puppeteer.launch({
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      headless: true,
      userDataDir: profile,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-dev-shm-usage',
      ],
    });
  }, 30_000);
  afterAll(async () => {
    await browser?.close();
    await rm(profile, { recursive: true, force: true });
    await api?.stop();
    await s3?.destroy();
    await db?.drop();
  });

  async function open(js: boolean): Promise<{ page: Page; problems: string[] }> {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warn') problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${String(e)}`));
    page.on('requestfailed', (r) => problems.push(`requestfailed: ${r.url()}`));
    await page.setJavaScriptEnabled(js);
    await page.setViewport({ width: 1000, height: 900 });
    const res = await page.goto(`${api.url}/status`, { waitUntil: 'load' });
    expect(res?.status()).toBe(200);
    return { page, problems };
  }

  it('renders, shows a newly opened incident within 2 s without a reload, has no console errors, passes axe, and is captured', async () => {
    const { page, problems } = await open(true);
    expect(await page.$eval('h1', (h) => h.textContent)).toBe('SAV3 status');
    expect(await page.$$eval('ul.components li', (l) => l.length)).toBe(4);
    // The live stream is connected once the first status event has arrived; give it that moment.
    await new Promise((r) => setTimeout(r, 300));

    const created = await request(api.url)
      .post('/admin/incidents')
      .set(op)
      .send({
        severity: 'P1',
        title: 'Media uploads failing',
        components: ['media-uploads'],
        summary: 'Some uploads fail; downloads work.',
      });
    expect(created.status).toBe(201);
    // From the moment the incident exists (the API answered) to the page showing it.
    const opened = Date.now();
    await page.waitForFunction(mainIncludes('Media uploads failing'), { timeout: 2000, polling: 50 });
    expect(Date.now() - opened).toBeLessThan(2000);
    await request(api.url)
      .post(`/admin/incidents/${created.body.id}/updates`)
      .set(op)
      .send({ message: 'Uploads are moving to the backup storage.', visibility: 'public', status: 'identified' });
    await page.waitForFunction(mainIncludes('moving to the backup storage'), { timeout: 2000, polling: 50 });

    await page.evaluate(axe.source);
    const result = (await page.evaluate("axe.run(document, { resultTypes: ['violations'] })")) as axe.AxeResults;
    expect(result.violations.map((v) => `${v.id}: ${v.nodes.length} node(s)`)).toEqual([]);

    await mkdir(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect((await stat(SCREENSHOT)).size).toBeGreaterThan(10_000);
    expect(problems).toEqual([]);
    await page.close();
  }, 30_000);

  it('without JavaScript the page still shows components and the open incident', async () => {
    const { body: inc } = await request(api.url)
      .post('/admin/incidents')
      .set(op)
      .send({ severity: 'P2', title: 'Slow downloads', components: ['media-downloads'], summary: 'Downloads are slow.' });
    await request(api.url)
      .post(`/admin/incidents/${inc.id}/updates`)
      .set(op)
      .send({ message: 'A fix is rolling out.', visibility: 'public', status: 'monitoring' });
    const { page, problems } = await open(false);
    const text = await page.$eval('main', (m) => m.textContent ?? '');
    expect(text).toContain('Slow downloads');
    expect(text).toContain('A fix is rolling out.');
    expect(text).toContain('Past 90 days');
    expect(problems).toEqual([]);
    await page.close();
  });
});
