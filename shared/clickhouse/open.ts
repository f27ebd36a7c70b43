import { DrawdownError } from '../errors.js';
import { ChdbStore } from './chdb-store.js';
import { FailoverStore } from './failover-store.js';
import { ServerStore } from './server-store.js';
import type { Store } from './store.js';

export interface OpenStoreOptions {
  /**
   * DRAWDOWN_CLICKHOUSE_CLUSTER: the tables replicate over this cluster, and
   * the URL may list its replicas, comma-separated (FailoverStore).
   */
  cluster?: string | undefined;
}

/**
 * `http(s)://[user[:password]@]host:port[/database]` → a ClickHouse server;
 * several, comma-separated → the replicas of a cluster, one at a time;
 * `chdb:PATH` → embedded chDB with its data under PATH.
 */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<Store> {
  if (url.startsWith('chdb:')) {
    if (options.cluster !== undefined)
      throw new DrawdownError(
        'config_invalid',
        'DRAWDOWN_CLICKHOUSE_CLUSTER needs ClickHouse servers: chDB cannot replicate',
      );
    const path = url.slice('chdb:'.length).replace(/^\/\//, '');
    if (path.length === 0)
      throw new DrawdownError('config_invalid', 'chdb: URL needs a data directory, e.g. chdb:.data/chdb');
    return ChdbStore.open(path);
  }
  const urls = url.split(',');
  if (urls.length > 1 && options.cluster === undefined)
    throw new DrawdownError(
      'config_invalid',
      'DRAWDOWN_CLICKHOUSE_URL lists several servers: set DRAWDOWN_CLICKHOUSE_CLUSTER to the cluster they are replicas of',
    );
  const replicas = urls.map((one) => serverStore(one));
  const databases = new Set(replicas.map((r) => r.database));
  if (databases.size > 1)
    throw new DrawdownError(
      'config_invalid',
      `every replica in DRAWDOWN_CLICKHOUSE_URL must name the same database, got ${[...databases].join(', ')}`,
    );
  if (options.cluster === undefined) return replicas[0]!.store;
  return new FailoverStore(options.cluster, replicas);
}

function serverStore(url: string): { url: string; database: string; store: ServerStore } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new DrawdownError(
      'config_invalid',
      `ClickHouse URL ${JSON.stringify(url)} is neither http(s):// nor chdb:PATH`,
    );
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new DrawdownError('config_invalid', `ClickHouse URL must be http(s):// or chdb:PATH, got ${parsed.protocol}`);
  }
  const database = parsed.pathname.replace(/^\//, '') || 'default';
  const username = decodeURIComponent(parsed.username) || 'default';
  const password = decodeURIComponent(parsed.password);
  parsed.username = '';
  parsed.password = '';
  parsed.pathname = '/';
  return {
    url: `${parsed.origin}/${database}`,
    database,
    store: new ServerStore({ url: parsed.origin, database, username, password }),
  };
}
