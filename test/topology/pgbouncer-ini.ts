// Renders pgbouncer.ini and userlist.txt from the container environment the way the
// edoburu/pgbouncer image's entrypoint does (v1.23.1-p2, the tag docker-compose.yml pins): one
// [databases] entry `DB_NAME = host=DB_HOST port=DB_PORT auth_user=DB_USER`, the userlist line
// `"DB_USER" "DB_PASSWORD"` (plain for plain/scram-sha-256 auth, else md5), fixed defaults for
// listen_addr/listen_port/auth_type/ignore_startup_parameters/admin_users, and one
// `lower_name = value` line for each optional variable that is set. A variable this renderer does
// not know fails the rendering, so the compose file cannot rely on one the image would ignore.
import { createHash } from 'node:crypto';

// Optional settings the entrypoint writes as `${NAME:+name = ${NAME}}`.
const OPTIONAL = [
  'AUTH_HBA_FILE',
  'AUTH_USER',
  'AUTH_QUERY',
  'AUTH_DBNAME',
  'POOL_MODE',
  'MAX_CLIENT_CONN',
  'POOL_SIZE',
  'DEFAULT_POOL_SIZE',
  'MIN_POOL_SIZE',
  'RESERVE_POOL_SIZE',
  'RESERVE_POOL_TIMEOUT',
  'MAX_DB_CONNECTIONS',
  'MAX_USER_CONNECTIONS',
  'SERVER_ROUND_ROBIN',
  'DISABLE_PQEXEC',
  'APPLICATION_NAME_ADD_HOST',
  'TIMEZONE',
  'MAX_PREPARED_STATEMENTS',
  'LOG_CONNECTIONS',
  'LOG_DISCONNECTIONS',
  'LOG_POOLER_ERRORS',
  'LOG_STATS',
  'STATS_PERIOD',
  'VERBOSE',
  'STATS_USERS',
  'SERVER_RESET_QUERY',
  'SERVER_RESET_QUERY_ALWAYS',
  'SERVER_CHECK_DELAY',
  'SERVER_CHECK_QUERY',
  'SERVER_LIFETIME',
  'SERVER_IDLE_TIMEOUT',
  'SERVER_CONNECT_TIMEOUT',
  'SERVER_LOGIN_RETRY',
  'CLIENT_LOGIN_TIMEOUT',
  'AUTODB_IDLE_TIMEOUT',
  'DNS_MAX_TTL',
  'DNS_NXDOMAIN_TTL',
  'QUERY_TIMEOUT',
  'QUERY_WAIT_TIMEOUT',
  'CLIENT_IDLE_TIMEOUT',
  'IDLE_TRANSACTION_TIMEOUT',
  'PKT_BUF',
  'MAX_PACKET_SIZE',
  'LISTEN_BACKLOG',
  'SBUF_LOOPCNT',
  'SUSPEND_TIMEOUT',
  'TCP_DEFER_ACCEPT',
  'TCP_KEEPALIVE',
  'TCP_KEEPCNT',
  'TCP_KEEPIDLE',
  'TCP_KEEPINTVL',
  'TCP_USER_TIMEOUT',
];
const FIXED = [
  'DB_HOST',
  'DB_PORT',
  'DB_USER',
  'DB_PASSWORD',
  'DB_NAME',
  'LISTEN_ADDR',
  'LISTEN_PORT',
  'UNIX_SOCKET_DIR',
  'AUTH_FILE',
  'AUTH_TYPE',
  'IGNORE_STARTUP_PARAMETERS',
  'ADMIN_USERS',
];

export interface PgbouncerFiles {
  ini: string;
  userlist: string;
}

export function renderPgbouncer(env: Record<string, string>, authFile: string): PgbouncerFiles {
  const unknown = Object.keys(env).filter((k) => !OPTIONAL.includes(k) && !FIXED.includes(k));
  if (unknown.length > 0) throw new Error(`pgbouncer environment the image's entrypoint does not render: ${unknown.join(', ')}`);
  if (!env.DB_HOST) throw new Error('Setup pgbouncer config error! You must set DB_HOST env');
  const set = (name: string) => (env[name] ? env[name] : undefined);
  const lines = [
    '[databases]',
    `${set('DB_NAME') ?? '*'} = host=${env.DB_HOST} port=${set('DB_PORT') ?? '5432'} auth_user=${set('DB_USER') ?? 'postgres'}`,
    '',
    '[pgbouncer]',
    `listen_addr = ${set('LISTEN_ADDR') ?? '0.0.0.0'}`,
    `listen_port = ${set('LISTEN_PORT') ?? '5432'}`,
    `unix_socket_dir = ${env.UNIX_SOCKET_DIR ?? ''}`,
    'user = postgres',
    `auth_file = ${authFile}`,
    `auth_type = ${set('AUTH_TYPE') ?? 'md5'}`,
    `ignore_startup_parameters = ${set('IGNORE_STARTUP_PARAMETERS') ?? 'extra_float_digits'}`,
    `admin_users = ${set('ADMIN_USERS') ?? 'postgres'}`,
    ...OPTIONAL.filter((name) => set(name) !== undefined).map((name) => `${name.toLowerCase()} = ${env[name]}`),
  ];
  let userlist = '';
  if (env.DB_USER && env.DB_PASSWORD) {
    const plain = env.AUTH_TYPE === 'plain' || env.AUTH_TYPE === 'scram-sha-256';
    const pass = plain
      ? env.DB_PASSWORD
      : `md5${createHash('md5')
          .update(env.DB_PASSWORD + env.DB_USER)
          .digest('hex')}`;
    userlist = `"${env.DB_USER}" "${pass}"\n`;
  }
  return { ini: `${lines.join('\n')}\n`, userlist };
}
