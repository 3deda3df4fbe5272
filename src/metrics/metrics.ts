import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Every metric the service exports, on its own Registry (never prom-client's global one), so two
 * app instances in one test process do not share counters.
 */
export function createMetrics(registry: Registry = new Registry()) {
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  dropMisnamedGauges(registry);
  return {
    registry,
    httpRequestDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration by method, route template and status code',
      labelNames: ['method', 'route', 'status_code'] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    dependencyUp: new Gauge({
      name: 'sav3_dependency_up',
      help: 'Whether the last probe of a dependency succeeded (1) or not (0)',
      labelNames: ['dependency', 'target'] as const,
      registers,
    }),
    dependencyCheckDuration: new Histogram({
      name: 'sav3_dependency_check_duration_seconds',
      help: 'Duration of dependency health probes',
      labelNames: ['dependency'] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    readOnlyMode: new Gauge({
      name: 'sav3_read_only_mode',
      help: 'Whether read-only mode is on (1) or off (0) on this instance',
      registers,
    }),
    readOnlyRejections: new Counter({
      name: 'sav3_read_only_rejections_total',
      help: 'Mutating requests refused because read-only mode is on',
      registers,
    }),
    drStateVersion: new Gauge({
      name: 'sav3_dr_state_version',
      help: 'Version of the shared DR state this instance has applied',
      registers,
    }),
    databaseActiveTarget: new Gauge({
      name: 'sav3_database_active_target',
      help: 'The database target serving requests on this instance (1 for the active one)',
      labelNames: ['target'] as const,
      registers,
    }),
    mediaActiveBackend: new Gauge({
      name: 'sav3_media_active_backend',
      help: 'The media backend taking uploads on this instance (1 for the active one)',
      labelNames: ['backend'] as const,
      registers,
    }),
    failoverTotal: new Counter({
      name: 'sav3_failover_total',
      help: 'DR operations (promote, database switch, media switch) by result',
      labelNames: ['kind', 'result'] as const,
      registers,
    }),
    mediaBackupBacklog: new Gauge({
      name: 'sav3_media_backup_backlog',
      help: 'Uploads waiting to be copied to the backup media backend (continuous backup)',
      registers,
    }),
    mediaBackupStuck: new Gauge({
      name: 'sav3_media_backup_stuck',
      help: 'Continuous-backup outbox rows that keep failing (3 attempts or more) or have waited over a minute',
      registers,
    }),
    mediaIntegrityFailures: new Counter({
      name: 'sav3_media_integrity_failures_total',
      help: 'Media reads whose content did not match the acknowledged sha256 or size (the response was aborted), by backend',
      labelNames: ['backend'] as const,
      registers,
    }),
    mediaBackupRetired: new Gauge({
      name: 'sav3_media_backup_retired',
      help: 'Versions the continuous backup gave up on (content missing on every backend that should hold it) still missing on the target: run a media sync',
      registers,
    }),
    rpoExposure: new Gauge({
      name: 'sav3_rpo_exposure_seconds',
      help: 'Age of the oldest acknowledged write not yet backed up (database: unarchived WAL; media: the outbox), 0 when all is',
      labelNames: ['component'] as const,
      registers,
    }),
    replicationLag: new Gauge({
      name: 'sav3_replication_lag_seconds',
      help: 'Replication lag of the streaming replica in seconds (-1 when unknown)',
      registers,
    }),
    databaseWritableNodes: new Gauge({
      name: 'sav3_database_writable_nodes',
      help: 'Configured PostgreSQL nodes that answer and take writes (not in recovery, not fenced); above 1 is a split brain',
      registers: [registry],
    }),
    writeBarrierWaited: new Counter({
      name: 'sav3_write_barrier_waited_total',
      help: 'Commits a write barrier (read-only on, database switch) waited for',
      registers: [registry],
    }),
    writesFenced: new Counter({
      name: 'sav3_writes_fenced_total',
      help: 'Client writes refused at their commit because the DR state changed while they ran',
      registers: [registry],
    }),
    // Backups (pgBackRest), the WAL archive and validation restores.
    backupLastSuccess: new Gauge({
      name: 'sav3_backup_last_success_timestamp_seconds',
      help: 'Stop time of the newest successful pgBackRest backup by type (0: none)',
      labelNames: ['type'] as const,
      registers,
    }),
    walArchiveFailures: new Counter({
      name: 'sav3_wal_archive_failures_total',
      help: 'WAL segments the primary failed to archive, by reason: archive_command_failed (pg_stat_archiver.failed_count increases), archive_missing_in_repository (reported archived, absent from the pgBackRest repository), archive_not_progressing (waiting to be archived beyond WAL_ARCHIVE_STALL_MS), archive_hole (absent from the repository between archived ones, where recovery from the newest recoverable backup stops; counted once per hole)',
      labelNames: ['reason'] as const,
      registers,
    }),
    walArchivingFailing: new Gauge({
      name: 'sav3_wal_archiving_failing',
      help: 'WAL archiving is failing now (1), by reason; 0 when it is not (or it cannot be read)',
      labelNames: ['reason'] as const,
      registers,
    }),
    backupMaxAge: new Gauge({
      name: 'sav3_backup_max_age_seconds',
      help: 'Configured bound on the age of the newest full or differential backup (BACKUP_MAX_AGE)',
      registers,
    }),
    backupRunning: new Gauge({
      name: 'sav3_backup_running_seconds',
      help: 'How long the backup job holding the backup slot (one at a time) has been running, or queued; 0 when none',
      registers,
    }),
    backupRunningMax: new Gauge({
      name: 'sav3_backup_running_max_seconds',
      help: 'Configured bound beyond which a running backup is reported overdue (BACKUP_RUNNING_MAX); it is not stopped',
      registers,
    }),
    backupValidationLastSuccess: new Gauge({
      name: 'sav3_backup_validation_last_success_timestamp_seconds',
      help: 'Finish time of the newest passing backup validation restore (0: none)',
      registers,
    }),
    backupValidationMaxAge: new Gauge({
      name: 'sav3_backup_validation_max_age_seconds',
      help: 'Configured bound on the age of the newest passing validation (BACKUP_VALIDATION_MAX_AGE)',
      registers,
    }),
    backupRestoreSeconds: new Histogram({
      name: 'sav3_backup_restore_seconds',
      help: 'Duration of validation restores (pgBackRest restore, then recovery to the target)',
      labelNames: ['phase'] as const,
      buckets: [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
      registers,
    }),
    jobsTotal: new Counter({
      name: 'sav3_jobs_total',
      help: 'DR jobs run by this worker, by kind and result',
      labelNames: ['kind', 'result'] as const,
      registers,
    }),
    ...incidentMetrics(registers),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
export type DrMetrics = Pick<Metrics, 'drStateVersion'>;

/**
 * prom-client also exports `nodejs_active_{handles,requests,resources}_total` gauges, which
 * `promtool check metrics` rejects (only counters end in _total). The same counts stay available
 * as the per-type `nodejs_active_handles` etc. gauges, so the misnamed ones are dropped.
 */
function dropMisnamedGauges(registry: Registry): void {
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name);
  }
}

/** Incident response: open incidents, acknowledgement against the runbook's targets, notifications. */
function incidentMetrics(registers: Registry[]) {
  return {
    incidentsOpen: new Gauge({
      name: 'sav3_incidents_open',
      help: 'Open (not resolved) incidents by severity',
      labelNames: ['severity'] as const,
      registers,
    }),
    incidentUnacknowledged: new Gauge({
      name: 'sav3_incident_unacknowledged_seconds',
      help: 'Age of the oldest open, unacknowledged incident by severity (0 when none)',
      labelNames: ['severity'] as const,
      registers,
    }),
    incidentResponseTarget: new Gauge({
      name: 'sav3_incident_response_target_seconds',
      help: "The runbook's response-time target by severity",
      labelNames: ['severity'] as const,
      registers,
    }),
    notificationsPending: new Gauge({
      name: 'sav3_notifications_pending',
      help: 'Incident notifications in the outbox not yet delivered',
      registers,
    }),
    notificationDeliveries: new Counter({
      name: 'sav3_notification_deliveries_total',
      help: 'Notification delivery attempts by result (sent, failed)',
      labelNames: ['result'] as const,
      registers,
    }),
  };
}
