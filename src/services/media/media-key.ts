import { z } from 'zod';

export const MAX_KEY_LENGTH = 512;

/**
 * Object keys: 1-512 characters of letters, digits and `. _ - /`, segments separated by single
 * slashes, no `.` or `..` segment, no leading or trailing slash.
 */
export const mediaKeySchema = z
  .string()
  .min(1, { error: 'must not be empty' })
  .max(MAX_KEY_LENGTH, { error: `must be at most ${MAX_KEY_LENGTH} characters` })
  .regex(/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/, {
    error: 'must be letters, digits and . _ - in segments separated by single slashes',
  })
  .refine((key) => key.split('/').every((segment) => segment !== '.' && segment !== '..'), {
    error: 'must not contain . or .. segments',
  });

export const contentTypeSchema = z
  .string()
  .max(255)
  .regex(/^[\w.+-]+\/[\w.+-]+(\s*;\s*[\w.+-]+=("[^"]*"|[\w.+-]+))*$/, { error: 'must be a media type such as image/png' });
