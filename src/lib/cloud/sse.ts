/**
 * Reading server-sent events (the WHATWG HTML "text/event-stream" format) from a fetch body: the
 * server's build output and device log follows use it. Only what skiff server sends is needed:
 * `id:` and `data:` fields, events ended by a blank line, `:` comment lines as keep-alives.
 */

/** One event: `id` as sent (the server's seq or line id), `data` its (joined) data lines. */
export interface ServerSentEvent {
  id: string | undefined;
  event: string | undefined;
  data: string;
}

/**
 * Calls `onEvent` for each complete event of `body`, in order, until the stream ends (resolves)
 * or fails (rejects with the stream's error; the caller decides whether to re-attach). An event
 * cut off by the end of the stream is dropped, so a re-attach from the last id repeats nothing.
 */
export async function readServerSentEvents(body: ReadableStream<Uint8Array>, onEvent: (event: ServerSentEvent) => void): Promise<void> {
  const decoder = new TextDecoder();
  let buffer = '';
  let id: string | undefined;
  let event: string | undefined;
  let data: string[] = [];
  const line = (text: string): void => {
    if (text === '') {
      if (data.length > 0) onEvent({ id, event, data: data.join('\n') });
      id = undefined;
      event = undefined;
      data = [];
      return;
    }
    if (text.startsWith(':')) return;
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'id') id = value;
    else if (field === 'event') event = value;
  };
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffer.search(/\r\n|\n|\r/)) !== -1) {
        const crlf = buffer[newline] === '\r' && buffer[newline + 1] === '\n';
        line(buffer.slice(0, newline));
        buffer = buffer.slice(newline + (crlf ? 2 : 1));
      }
    }
  } finally {
    reader.releaseLock();
  }
}
