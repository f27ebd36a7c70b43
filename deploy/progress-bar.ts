/**
 * A one-line progress bar for a terminal: redrawn in place with a carriage
 * return, cleared before anything else is written to the same terminal (see
 * `around`), so log lines and the bar never share a line. Only for a TTY: off
 * one, progress is log lines.
 */
export interface Terminal {
  write(text: string): unknown;
  /** Width in characters, when the terminal says (0 or absent: 80). */
  columns?: number;
}

const barWidth = 24;

export class ProgressBar {
  #shown = '';

  constructor(private readonly terminal: Terminal) {}

  /** `label` and, when a total is known, a bar of done/total. */
  update(label: string, done?: number, total?: number): void {
    let line = label;
    if (done !== undefined && total !== undefined && total > 0) {
      const filled = Math.round((barWidth * Math.min(done, total)) / total);
      line = `[${'█'.repeat(filled)}${'░'.repeat(barWidth - filled)}] ${label}`;
    }
    // A line wider than the terminal wraps, and `\r` then redraws only its last part.
    const width = this.terminal.columns || 80;
    if (line.length > width - 1) line = line.slice(0, Math.max(0, width - 2)) + '…';
    this.clear();
    this.terminal.write(line);
    this.#shown = line;
  }

  /** Erases the bar, leaving the cursor at the start of its (now empty) line. */
  clear(): void {
    if (this.#shown === '') return;
    this.terminal.write('\r\x1b[2K');
    this.#shown = '';
  }

  /** Writes `text` (whole lines) with the bar cleared first and drawn again after. */
  around(text: string): void {
    const shown = this.#shown;
    this.clear();
    this.terminal.write(text);
    if (shown !== '') {
      this.terminal.write(shown);
      this.#shown = shown;
    }
  }
}
