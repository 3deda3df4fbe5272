import { Router } from 'express';
import type { Lifecycle } from '../lifecycle/lifecycle.ts';
import type { EventHub } from '../services/incidents/event-hub.ts';
import { renderStatusPage, STATUS_SCRIPT } from '../services/incidents/status-page.ts';
import type { StatusService, StatusSnapshot } from '../services/incidents/status-service.ts';
import type { SseStreams } from '../http/sse.ts';

/** How often a status stream re-reads even without an event (a missed pub/sub message heals). */
export const STATUS_STREAM_REFRESH_MS = 5000;

/** The public status page, its JSON, its live stream; no authentication, never an error message. */
export function statusRoutes(deps: { status: StatusService; hub: EventHub; streams: SseStreams; lifecycle: Lifecycle }): Router {
  const router = Router();
  const publicHeaders = (res: import('express').Response) => {
    res.setHeader('Cache-Control', 'no-cache');
  };

  router.get('/status', async (_req, res) => {
    const snapshot = await deps.status.snapshot();
    publicHeaders(res);
    res.type('html').send(renderStatusPage(snapshot));
  });

  router.get('/status.json', async (_req, res) => {
    publicHeaders(res);
    res.json(await deps.status.snapshot());
  });

  router.get('/status/status.js', (_req, res) => {
    res.setHeader('Cache-Control', 'public, max-age=300');
    res.type('js').send(STATUS_SCRIPT);
  });

  router.get('/status/events', async (req, res) => {
    const stream = deps.streams.start(req, res);
    let last = '';
    let busy = false;
    let again = false;
    // One read at a time per stream; an event during a read causes one more read after it.
    const push = async () => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      try {
        do {
          again = false;
          const snapshot: StatusSnapshot = await deps.status.snapshot();
          const { updatedAt: _ignored, ...comparable } = snapshot;
          const key = JSON.stringify(comparable);
          if (key !== last) {
            last = key;
            stream.send('status', snapshot);
          }
        } while (again);
      } catch {
        // The next event or tick tries again.
      } finally {
        busy = false;
      }
    };
    const unsubscribe = deps.hub.subscribe((event) => {
      if (event.type.startsWith('incident.') || event.type === 'health.transition') {
        deps.status.invalidate();
        void push();
      }
    });
    const timer = setInterval(() => void push(), STATUS_STREAM_REFRESH_MS);
    stream.onClose(() => {
      unsubscribe();
      clearInterval(timer);
    });
    await push();
  });

  return router;
}
