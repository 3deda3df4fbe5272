import { jsonBody } from '../http/json-body.ts';

/** JSON bodies for admin routes only, bounded: anything larger is a mistake or an attack. */
export const adminJson = jsonBody({ limit: '16kb' });
