#!/bin/sh
# Stands in for Prisma's native schema engine, which cannot be downloaded offline.
# `prisma generate` only needs the file to exist; anything that really needs the engine lands here.
echo "prisma schema engine is not installed here: apply migrations with 'npm run db:migrate' (offline)" >&2
exit 1
