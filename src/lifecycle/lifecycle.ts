/** Process lifecycle shared by health routes and shutdown: readiness turns 503 before draining. */
export class Lifecycle {
  shuttingDown = false;
}
