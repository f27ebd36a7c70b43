import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createLogger } from './log.js';

describe('logs never carry a query string', () => {
  it('drops the query from a logged url, req or request, raw request included, and still redacts Authorization', () => {
    let logged = '';
    const log = createLogger('trace', 'log-test', { write: (line: string) => void (logged += line) });
    const raw = new IncomingMessage(new Socket());
    raw.method = 'GET';
    raw.url = '/v1/customers/x/balance?api_key=secret-raw';
    raw.headers = { authorization: 'Bearer secret-header' };
    log.info({ url: '/v1/customers/x/balance?api_key=secret-url' }, 'url');
    log.info(
      {
        req: {
          method: 'GET',
          url: '/v1/customers/x/usage?from=0&api_key=secret-req',
          headers: { authorization: 'Bearer secret-header' },
        },
      },
      'req',
    );
    log.child({ request: { url: 'http://h/v1/catalog?token=secret-child' } }).warn('child');
    log.info({ req: raw }, 'raw');
    const lines = logged
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, any>);
    expect(lines.map((l) => l.url ?? l.req?.url ?? l.request?.url)).toEqual([
      '/v1/customers/x/balance',
      '/v1/customers/x/usage',
      'http://h/v1/catalog',
      '/v1/customers/x/balance',
    ]);
    expect(lines[1]!.req.headers.authorization).toBe('[redacted]');
    expect(logged).not.toMatch(/secret/);
  });
});
