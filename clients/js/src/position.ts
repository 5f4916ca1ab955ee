/**
 * Stream positions: where in its tenant's event stream a client is, for resume
 * and for dropping an event seen twice. Pure.
 */

/** A point in a tenant's stream; `epoch` changes whenever numbering restarts. */
export interface Position {
  readonly epoch: string;
  readonly seq: bigint;
}

/** Whether `event` is at or before `last` in the same epoch (already seen). */
export function isSeen(last: Position | undefined, event: Position): boolean {
  return last !== undefined && last.epoch === event.epoch && event.seq <= last.seq;
}

/**
 * The later of two positions. A position of another epoch replaces the current
 * one: the stream restarted, so the old numbering means nothing any more.
 */
export function advance(current: Position | undefined, next: Position | undefined): Position | undefined {
  if (next === undefined) {
    return current;
  }
  if (current === undefined || current.epoch !== next.epoch || next.seq > current.seq) {
    return { epoch: next.epoch, seq: next.seq };
  }
  return current;
}
