import { describe, expect, it } from 'vitest';
import { ProgressBar } from './progress-bar.js';

/** A terminal that applies `\r` and erase-line the way a real one does, so a test sees what a person would. */
function fakeTerminal(columns = 80): { write(text: string): void; columns: number; screen(): string[] } {
  const lines: string[] = [''];
  return {
    columns,
    write(text: string) {
      for (const part of text.split(/(\r\x1b\[2K|\n)/)) {
        if (part === '\n') lines.push('');
        else if (part === '\r\x1b[2K') lines[lines.length - 1] = '';
        else lines[lines.length - 1] += part;
      }
    },
    screen: () => lines,
  };
}

describe('ProgressBar', () => {
  it('redraws one line in place, filled in proportion to done/total', () => {
    const terminal = fakeTerminal();
    const bar = new ProgressBar(terminal);
    bar.update('100/300 accounts', 100, 300);
    bar.update('300/300 accounts', 300, 300);
    expect(terminal.screen()).toEqual([`[${'█'.repeat(24)}] 300/300 accounts`]);
    bar.update('write ledger');
    expect(terminal.screen()).toEqual(['write ledger']);
  });

  it('keeps a log line whole: the bar is cleared before it and drawn again after', () => {
    const terminal = fakeTerminal();
    const bar = new ProgressBar(terminal);
    bar.update('1/4 accounts', 1, 4);
    bar.around('{"msg":"a log line"}\n');
    expect(terminal.screen()).toEqual(['{"msg":"a log line"}', `[${'█'.repeat(6)}${'░'.repeat(18)}] 1/4 accounts`]);
    bar.clear();
    expect(terminal.screen()).toEqual(['{"msg":"a log line"}', '']);
  });

  it('never draws wider than the terminal, so a carriage return redraws the whole bar', () => {
    const terminal = fakeTerminal(30);
    new ProgressBar(terminal).update('123456/999999 accounts, 123456 entries', 1, 2);
    expect(terminal.screen()[0]!.length).toBeLessThan(30);
  });
});
