import { Router } from 'express';
import { z } from 'zod';
import { parseOrThrow } from '../http/validate.ts';
import type { JobLookup } from '../services/jobs/job-lookup.ts';

export const jobId = z.uuid({ error: 'must be a job id' });
export const jobParams = z.object({ id: jobId });

/** GET /admin/jobs/{id}: any job, media or DR queue (one read, dispatched on its kind). */
export function jobRoutes(jobs: JobLookup): Router {
  const router = Router();
  router.get('/admin/jobs/:id', async (req, res, next) => {
    const id = parseOrThrow(jobParams, req.params, 'invalid job id').id;
    const job = await jobs.find(id);
    // A DR queue job gone while it was read: answered like an unknown route, as before.
    if (!job) return next();
    res.json(job);
  });
  return router;
}
