import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { PmClientError } from "../src/errors.js";
import { UpdateQueue } from "../src/updates.js";

describe("UpdateQueue", () => {
  it("hands items over in order, to a waiting consumer too", async () => {
    const queue = new UpdateQueue<number>(10, () => undefined);
    queue.push(1);
    const first = await queue.next();
    const waiting = queue.next();
    queue.push(2);
    assert.deepEqual([first, await waiting], [{ value: 1, done: false }, { value: 2, done: false }]);
  });

  it("ends after the held items", async () => {
    let detached = 0;
    const queue = new UpdateQueue<number>(10, () => (detached += 1));
    queue.push(1);
    queue.end();
    queue.push(2);
    const seen: number[] = [];
    for await (const item of queue) {
      seen.push(item);
    }
    assert.deepEqual(seen, [1]);
    assert.equal(detached, 1);
  });

  it("fails loudly instead of dropping items when the consumer falls behind", async () => {
    const queue = new UpdateQueue<number>(2, () => undefined);
    [1, 2, 3, 4].forEach((n) => queue.push(n));
    assert.deepEqual(await queue.next(), { value: 1, done: false });
    assert.deepEqual(await queue.next(), { value: 2, done: false });
    await assert.rejects(queue.next(), (error: unknown) => error instanceof PmClientError && error.code === "BUFFER_OVERFLOW");
    assert.deepEqual(await queue.next(), { value: undefined, done: true });
  });

  it("breaking out of for-await detaches it", async () => {
    let detached = false;
    const queue = new UpdateQueue<number>(10, () => (detached = true));
    queue.push(1);
    for await (const item of queue) {
      assert.equal(item, 1);
      break;
    }
    assert.equal(detached, true);
  });
});
