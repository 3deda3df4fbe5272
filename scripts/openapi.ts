// `npm run openapi`: writes the OpenAPI 3.1 document (src/http/openapi.ts) to openapi.json.
// `--check` exits 1 when the committed file differs from what the code describes.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildOpenApiDocument } from '../src/http/openapi.ts';

export const OPENAPI_FILE = join(__dirname, '..', 'openapi.json');

export function renderOpenApi(): string {
  return `${JSON.stringify(buildOpenApiDocument(), null, 2)}\n`;
}

if (require.main === module) {
  const text = renderOpenApi();
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(OPENAPI_FILE, 'utf8');
    } catch {
      // missing: stale
    }
    if (current !== text) {
      console.error('openapi.json is stale: run npm run openapi');
      process.exit(1);
    }
    console.log('openapi.json is current');
  } else {
    writeFileSync(OPENAPI_FILE, text);
    console.log(`wrote ${OPENAPI_FILE}`);
  }
}
