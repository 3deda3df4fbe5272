import express from 'express';

/** JSON bodies for admin routes only, bounded: anything larger is a mistake or an attack. */
export const adminJson = express.json({ limit: '16kb' });
