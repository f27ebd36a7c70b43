import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import { openStore } from './open.js';
import { replicatedDdl } from './replication.js';
import { tables } from './schema.js';

describe('replicatedDdl', () => {
  it('given every table of the schema, then only its engine changes, to the Replicated engine of the same family', () => {
    for (const ddl of Object.values(tables)) {
      const table = /CREATE TABLE IF NOT EXISTS (\w+)/.exec(ddl)![1]!;
      const replicated = replicatedDdl(ddl, 'billing');
      const engine = /ENGINE = (\w*MergeTree)/.exec(ddl)![1]!;
      expect(replicated).toBe(
        ddl.replace(
          `ENGINE = ${engine}`,
          `ENGINE = Replicated${engine}('/clickhouse/tables/{shard}/billing/${table}', '{replica}')`,
        ),
      );
    }
  });

  it('given a statement that is not one CREATE TABLE with one MergeTree engine, then it throws', () => {
    expect(() => replicatedDdl('ALTER TABLE t ADD COLUMN x String', 'db')).toThrow(/not a CREATE TABLE/);
    expect(() => replicatedDdl('CREATE TABLE IF NOT EXISTS t (x String) ENGINE = Log', 'db')).toThrow(/found 0/);
  });
});

describe('DRAWDOWN_CLICKHOUSE_CLUSTER and a list of URLs', () => {
  it('given a cluster with chdb, then the configuration is refused naming the setting', () => {
    expect(() =>
      loadConfig(new Map(), { DRAWDOWN_CLICKHOUSE_URL: 'chdb:/tmp/x', DRAWDOWN_CLICKHOUSE_CLUSTER: 'drawdown' }),
    ).toThrow(/DRAWDOWN_CLICKHOUSE_CLUSTER needs ClickHouse servers/);
  });

  it('given replica URLs, then they are accepted comma-separated, and a malformed list or cluster name is refused', () => {
    const config = loadConfig(new Map(), {
      DRAWDOWN_CLICKHOUSE_URL: 'http://a:8123/db,https://u:p@b:8443/db',
      DRAWDOWN_CLICKHOUSE_CLUSTER: 'drawdown_1',
    });
    expect(config.clickhouseCluster).toBe('drawdown_1');
    expect(() => loadConfig(new Map(), { DRAWDOWN_CLICKHOUSE_URL: 'http://a:8123,,http://b:8123' })).toThrow(
      /DRAWDOWN_CLICKHOUSE_URL is malformed/,
    );
    expect(() => loadConfig(new Map(), { DRAWDOWN_CLICKHOUSE_CLUSTER: 'a b' })).toThrow(
      /DRAWDOWN_CLICKHOUSE_CLUSTER is malformed/,
    );
  });

  it('given several URLs without a cluster, or replicas naming different databases, then openStore refuses', async () => {
    await expect(openStore('http://127.0.0.1:1,http://127.0.0.1:2')).rejects.toMatchObject({
      code: 'config_invalid',
      message: /set DRAWDOWN_CLICKHOUSE_CLUSTER/,
    });
    await expect(openStore('http://127.0.0.1:1/a,http://127.0.0.1:2/b', { cluster: 'c' })).rejects.toMatchObject({
      code: 'config_invalid',
      message: /same database/,
    });
  });

  it('given a cluster, then the store names its replicas and starts on the first', async () => {
    const store = await openStore('http://127.0.0.1:1/db,http://127.0.0.1:2/db', { cluster: 'c' });
    try {
      expect(store.cluster?.name).toBe('c');
      expect(store.cluster?.replicas.length).toBe(2);
      expect(store.cluster?.current()).toBe('http://127.0.0.1:1/db');
      // Nothing listens on port 1: the failure moves the store to the next replica.
      await expect(store.query('SELECT 1')).rejects.toMatchObject({ retryable: true });
      expect(store.cluster?.current()).toBe('http://127.0.0.1:2/db');
    } finally {
      await store.close();
    }
  });
});
