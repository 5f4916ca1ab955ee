/**
 * A bounded queue behind `PmClient.updates()`: what the client pushes, an
 * async iterator pulls, in order.
 */

import { PmClientError } from "./errors.js";

/**
 * Holds at most `capacity` items for a slow consumer. Overflow does not drop
 * items silently: the iterator throws `PmClientError("BUFFER_OVERFLOW")` after
 * the items it already holds, and the consumer must refetch its state. `end()`
 * finishes the iteration once the held items are read.
 */
export class UpdateQueue<T> implements AsyncIterableIterator<T> {
  private readonly items: T[] = [];
  // Set only while the queue is empty: a consumer waits for the next push.
  private waiter: ((result: IteratorResult<T>) => void) | undefined;
  private finished = false;
  private failure: Error | undefined;

  constructor(
    private readonly capacity: number,
    private readonly onDetach: () => void,
  ) {}

  /** Adds an item; after `end()` or an overflow, does nothing. */
  push(item: T): void {
    if (this.finished) {
      return;
    }
    if (this.waiter !== undefined) {
      const resolve = this.waiter;
      this.waiter = undefined;
      resolve({ value: item, done: false });
      return;
    }
    if (this.items.length >= this.capacity) {
      this.fail(new PmClientError("BUFFER_OVERFLOW", `more than ${this.capacity} updates were not read`));
      return;
    }
    this.items.push(item);
  }

  /** Finishes the iteration after the items already held. */
  end(): void {
    if (this.finished) {
      return;
    }
    this.finished = true;
    this.onDetach();
    if (this.waiter !== undefined) {
      const resolve = this.waiter;
      this.waiter = undefined;
      resolve({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<T>> {
    const item = this.items.shift();
    if (item !== undefined) {
      return Promise.resolve({ value: item, done: false });
    }
    if (this.failure !== undefined) {
      const failure = this.failure;
      this.failure = undefined;
      return Promise.reject(failure);
    }
    if (this.finished) {
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.items.length = 0;
    this.failure = undefined;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  private fail(error: Error): void {
    // Overflow needs a full queue, so no consumer is waiting: it meets the error after the items.
    this.failure = error;
    this.end();
  }
}
