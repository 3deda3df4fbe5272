// One isolated, freshly migrated database per test run; Redis keys are isolated per instance.
import { createScratchDatabase } from '../../support/scratch-database.ts';

export default async function globalSetup(): Promise<void> {
  const db = await createScratchDatabase('sav3_test');
  process.env.TEST_DATABASE_NAME = db.name;
  process.env.TEST_DATABASE_URL = db.url;
}
