/**
 * A customer's notice evaluation that fails — its live figures unreadable for
 * a moment — is tried again with back-off, a bounded number of times
 * (settlement/notices/evaluator.ts): the touch that failed may be the
 * customer's last, and the sweep only looks at accounts already recorded
 * below a threshold. Real nats-server: the crossing state, the settings and
 * the notice stream are the ones a settlement process uses.
 */
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCatalogFile, type Catalog } from '../catalog/model.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { createLogger } from '../shared/log.js';
import { CrossingStore } from '../settlement/notices/crossing-store.js';
import { NoticeEvaluator, type CustomerFigures } from '../settlement/notices/evaluator.js';
import { createNoticeMetrics } from '../settlement/notices/notice-metrics.js';
import { NoticeSettingsStore } from '../settlement/notices/notice-settings.js';
import { ensureNoticeStream, NoticePublisher, noticeStreamDefaults } from '../settlement/notices/notice-stream.js';
import { catalogPath, startNats, tempDir } from './harness.js';

describe('notice evaluations that fail are retried, a bounded number of times', () => {
  const dir = tempDir('notice-retry');
  let nats: NatsServerProcess;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let catalog: Catalog;
  let logged = '';

  beforeAll(async () => {
    nats = await startNats(dir.path);
    nc = await connect({ servers: nats.url });
    jsm = await jetstreamManager(nc);
    catalog = loadCatalogFile(catalogPath);
    await ensureNoticeStream(jsm, noticeStreamDefaults);
  });

  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
    dir.remove();
  });

  /** An evaluator over the real stores whose figures fail the first `failures` reads; counts the reads. */
  async function evaluatorWith(failures: number): Promise<{ evaluator: NoticeEvaluator; reads: () => number }> {
    let reads = 0;
    const settings = await NoticeSettingsStore.open(nc, {
      bucket: 'drawdown_notice_settings',
      replicas: 1,
      requestTimeoutMs: 5_000,
    });
    const evaluator = new NoticeEvaluator({
      crossings: await CrossingStore.open(nc, { replicas: 1 }),
      settings,
      publisher: new NoticePublisher(jetstream(nc), noticeStreamDefaults),
      catalog,
      figures: async (): Promise<CustomerFigures> => {
        reads++;
        if (reads <= failures) throw new Error('ClickHouse query failed: connect ECONNREFUSED');
        return { readAtMs: Date.now(), units: [{ unit: 'credits', available: '10', settled: '100' }] };
      },
      purchase: async () => {
        throw new Error('no purchases here');
      },
      metrics: createNoticeMetrics(new Registry()),
      log: createLogger('warn', 'notice-retry-test', { write: (line: string) => void (logged += line) }),
      limits: { retryDelaysMs: [50, 100, 200] },
    });
    return { evaluator, reads: () => reads };
  }

  const lowNotices = async (customer: string): Promise<number> => {
    const info = await jsm.streams.info(noticeStreamDefaults.name);
    let n = 0;
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage(noticeStreamDefaults.name, { seq }).catch(() => null);
      const notice = m?.json<{ type: string; data: { customer: string } }>();
      if (notice?.type === 'balance.low' && notice.data.customer === customer) n++;
    }
    return n;
  };

  const eventually = async (check: () => Promise<boolean>, what: string): Promise<void> => {
    const deadline = Date.now() + 20_000;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`${what} not reached within 20 s`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  it('given figures unreadable twice, when usage touches the customer once, then the crossing is still published once', async () => {
    const { evaluator, reads } = await evaluatorWith(2);
    const settings = await NoticeSettingsStore.open(nc, {
      bucket: 'drawdown_notice_settings',
      replicas: 1,
      requestTimeoutMs: 5_000,
    });
    await settings.write('retry-1', { units: { credits: { low: ['50'] } } });
    evaluator.touch('retry-1', { background: true, usage: true });
    await eventually(async () => (await lowNotices('retry-1')) === 1, 'balance.low for retry-1');
    expect(reads()).toBe(3);
    expect(logged).toContain('will retry');
    evaluator.stop();
  });

  it('given figures that never come back, then it gives up after the last retry and says so', async () => {
    const { evaluator, reads } = await evaluatorWith(Number.POSITIVE_INFINITY);
    evaluator.touch('retry-2', { background: true, usage: true });
    await eventually(async () => logged.includes('left to the next touch'), 'giving up');
    // The first attempt and one per retry delay, no more.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(reads()).toBe(4);
    expect(await lowNotices('retry-2')).toBe(0);
    evaluator.stop();
  });
});
