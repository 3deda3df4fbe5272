import { createHash } from 'node:crypto';
import type { Component } from './incident-model.ts';
import { oneLine, stripControls } from './incident-text.ts';

/** One alert of an Alertmanager webhook notification (version 4), as the route parsed it. */
export interface IncomingAlert {
  status: 'firing' | 'resolved';
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt?: string;
  fingerprint?: string;
}

/**
 * Label and annotation texts as shown to people (terminal, chat, post-mortem, status page): no
 * control characters, line breaks or BiDi controls in labels, none but line breaks in
 * annotations. Replaced, not refused: a 400 would lose the whole group.
 */
export function cleanAlert<A extends IncomingAlert>(a: A): A {
  const labels = Object.fromEntries(Object.entries(a.labels).map(([k, v]) => [oneLine(k), oneLine(v)]));
  const annotations = Object.fromEntries(Object.entries(a.annotations).map(([k, v]) => [oneLine(k), stripControls(v)]));
  return { ...a, labels, annotations };
}

export function componentsOf(a: IncomingAlert): Component[] {
  const named = a.labels.component;
  if (named === 'api' || named === 'database' || named === 'media-uploads' || named === 'media-downloads') return [named];
  const name = `${a.labels.alertname} ${a.labels.job ?? ''}`;
  if (/database|postgres|replica|replication|backup/i.test(name)) return ['database'];
  if (/media|minio|s3|storage/i.test(name)) return ['media-uploads', 'media-downloads'];
  if (/api|service|health/i.test(name)) return ['api'];
  return [];
}

/** Alertmanager's fingerprint, or one made from the sorted labels when it sent none. */
export function alertFingerprint(a: IncomingAlert): string {
  if (a.fingerprint) return a.fingerprint;
  const sorted = Object.keys(a.labels)
    .sort()
    .map((k) => `${k}=${a.labels[k]}`)
    .join(',');
  return createHash('sha256').update(sorted).digest('hex').slice(0, 16);
}
