import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { advance, isSeen } from "../src/position.js";
import { chunk, checkId, TopicSet } from "../src/subscriptions.js";

const at = (epoch: string, seq: number) => ({ epoch, seq: BigInt(seq) });

describe("positions", () => {
  it("an event at or before the last position of its epoch was seen", () => {
    assert.equal(isSeen(at("e1", 5), at("e1", 5)), true);
    assert.equal(isSeen(at("e1", 5), at("e1", 4)), true);
    assert.equal(isSeen(at("e1", 5), at("e1", 6)), false);
    assert.equal(isSeen(at("e1", 5), at("e2", 1)), false);
    assert.equal(isSeen(undefined, at("e1", 1)), false);
  });

  it("advance keeps the later position and lets a new epoch replace the old", () => {
    assert.deepEqual(advance(at("e1", 5), at("e1", 3)), at("e1", 5));
    assert.deepEqual(advance(at("e1", 5), at("e1", 9)), at("e1", 9));
    assert.deepEqual(advance(at("e1", 5), at("e2", 1)), at("e2", 1));
    assert.deepEqual(advance(undefined, at("e1", 0)), at("e1", 0));
    assert.deepEqual(advance(at("e1", 5), undefined), at("e1", 5));
  });
});

describe("subscriptions", () => {
  it("adding reports only new ids, and removing only held ones", () => {
    const topics = new TopicSet();
    assert.deepEqual(topics.add({ projects: ["p1", "p2"] }), { projects: ["p1", "p2"], sprints: [], workItems: [] });
    assert.deepEqual(topics.add({ projects: ["p2", "p3"], workItems: ["w1"] }), {
      projects: ["p3"],
      sprints: [],
      workItems: ["w1"],
    });
    assert.equal(topics.size, 4);
    assert.deepEqual(topics.remove({ projects: ["p1", "nope"] }), { projects: ["p1"], sprints: [], workItems: [] });
    assert.deepEqual(topics.lists(), { projects: ["p2", "p3"], sprints: [], workItems: ["w1"] });
  });

  it("refuses ids the server would refuse, adding none of the batch", () => {
    const topics = new TopicSet();
    for (const bad of ["", "x".repeat(129), "a\nb", "tab\there"]) {
      assert.throws(() => checkId(bad), RangeError);
      assert.throws(() => topics.add({ projects: ["ok", bad] }), RangeError);
    }
    assert.equal(topics.size, 0);
    checkId("x".repeat(128));
    checkId("ünïcödé-✓");
  });

  it("splits big sets into messages of at most 100 ids per list", () => {
    const projects = Array.from({ length: 250 }, (_, i) => `p${i}`);
    const parts = chunk({ projects, sprints: ["s1"], workItems: [] });
    assert.deepEqual(parts.map((part) => [part.projects.length, part.sprints.length]), [[100, 1], [100, 0], [50, 0]]);
    assert.deepEqual(parts.flatMap((part) => part.projects), projects);
    assert.deepEqual(chunk({ projects: [], sprints: [], workItems: [] }), []);
  });
});
