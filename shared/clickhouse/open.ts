import { DrawdownError } from '../errors.js';
import { ChdbStore } from './chdb-store.js';
import { ServerStore } from './server-store.js';
import type { Store } from './store.js';

/**
 * `http(s)://[user[:password]@]host:port[/database]` → a ClickHouse server;
 * `chdb:PATH` → embedded chDB with its data under PATH.
 */
export async function openStore(url: string): Promise<Store> {
  if (url.startsWith('chdb:')) {
    const path = url.slice('chdb:'.length).replace(/^\/\//, '');
    if (path.length === 0)
      throw new DrawdownError('config_invalid', 'chdb: URL needs a data directory, e.g. chdb:.data/chdb');
    return ChdbStore.open(path);
  }
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
  return new ServerStore({ url: parsed.origin, database, username, password });
}
