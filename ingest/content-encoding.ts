import { DrawdownError } from '../shared/errors.js';

/**
 * The body is read as sent: a compressed one would fail to decode (or, by
 * chance, decode to something else), so any coding but `identity` is
 * refused up front, naming it.
 */
export function checkContentEncoding(header: string | undefined): void {
  if (header === undefined) return;
  for (const coding of header.split(',')) {
    const name = coding.trim().toLowerCase();
    if (name !== '' && name !== 'identity') {
      throw new DrawdownError(
        'unsupported_media_type',
        `Content-Encoding ${JSON.stringify(header.trim().slice(0, 64))} is not supported; send the body uncompressed`,
      );
    }
  }
}
