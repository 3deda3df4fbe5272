import { z } from 'zod';
import { BadRequestError } from './app-error.ts';

// A missing field reads "required" in the 400's details, not zod's "Invalid input: expected
// string, received undefined"; every other message is the schema's own.
z.config({ customError: (issue) => (issue.code === 'invalid_type' && issue.input === undefined ? 'required' : undefined) });

/** Parses input with a zod schema; failures become 400 with messages per field. */
export function parseOrThrow<S extends z.ZodType>(schema: S, input: unknown, message = 'invalid request'): z.output<S> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  // No prototype: a field named `constructor` or `__proto__` is just a field.
  const details: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
  for (const issue of parsed.error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) (details[[...issue.path, key].join('.')] ??= []).push('unknown field');
      continue;
    }
    const field = issue.path.length > 0 ? issue.path.join('.') : '(body)';
    (details[field] ??= []).push(issue.message);
  }
  throw new BadRequestError(message, details);
}

/** A whole-number query parameter (query values arrive as strings) within [min, max]. */
export function wholeNumberParam(min: number, max: number, fallback: number) {
  const message = `must be a whole number from ${min} to ${max}`;
  return z
    .string()
    .regex(/^\d+$/, { error: message })
    .transform(Number)
    .refine((n) => n >= min && n <= max, { error: message })
    .default(fallback)
    .describe(`a whole number from ${min} to ${max}; default ${fallback}`);
}
