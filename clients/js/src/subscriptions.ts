/**
 * The set of ids a client wants events for, kept across reconnects, and how it
 * is split into `Subscribe` messages. Pure.
 */

/** Ids to subscribe to or unsubscribe from; every list is optional. */
export interface Topics {
  readonly projects?: readonly string[];
  readonly sprints?: readonly string[];
  readonly workItems?: readonly string[];
}

/** The same ids as arrays, every list present (possibly empty). */
export interface TopicLists {
  readonly projects: string[];
  readonly sprints: string[];
  readonly workItems: string[];
}

/** At most this many ids per list in one message (SPEC §2). */
export const MAX_IDS_PER_MESSAGE = 100;
const MAX_ID_LENGTH = 128;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Throws `RangeError` for an id the server would refuse: empty, over 128 characters, control characters. */
export function checkId(id: string): void {
  if (typeof id !== "string" || id.length === 0 || [...id].length > MAX_ID_LENGTH || CONTROL.test(id)) {
    throw new RangeError(`invalid id ${JSON.stringify(id)}: 1..128 characters, no control characters`);
  }
}

/** A mutable set of project, sprint and work-item ids. */
export class TopicSet {
  readonly projects = new Set<string>();
  readonly sprints = new Set<string>();
  readonly workItems = new Set<string>();

  /** How many ids, all kinds counted together (what the server's limit counts). */
  get size(): number {
    return this.projects.size + this.sprints.size + this.workItems.size;
  }

  /** Adds the ids and returns those that were not there yet. Validates every id first. */
  add(topics: Topics): TopicLists {
    const added = emptyLists();
    for (const [, ids] of entries(topics)) {
      ids.forEach(checkId);
    }
    for (const [kind, ids] of entries(topics)) {
      for (const id of ids) {
        if (!this[kind].has(id)) {
          this[kind].add(id);
          added[kind].push(id);
        }
      }
    }
    return added;
  }

  /** Removes the ids and returns those that were there. */
  remove(topics: Topics): TopicLists {
    const removed = emptyLists();
    for (const [kind, ids] of entries(topics)) {
      for (const id of ids) {
        if (this[kind].delete(id)) {
          removed[kind].push(id);
        }
      }
    }
    return removed;
  }

  /** The ids as sorted lists (a snapshot). */
  lists(): TopicLists {
    return {
      projects: [...this.projects].sort(),
      sprints: [...this.sprints].sort(),
      workItems: [...this.workItems].sort(),
    };
  }
}

/** Whether the lists hold no id at all. */
export function isEmpty(lists: TopicLists): boolean {
  return lists.projects.length === 0 && lists.sprints.length === 0 && lists.workItems.length === 0;
}

/**
 * Splits lists into messages of at most `MAX_IDS_PER_MESSAGE` ids per list.
 * Empty lists give no message at all.
 */
export function chunk(lists: TopicLists, size = MAX_IDS_PER_MESSAGE): TopicLists[] {
  const chunks: TopicLists[] = [];
  const longest = Math.max(lists.projects.length, lists.sprints.length, lists.workItems.length);
  for (let start = 0; start < longest; start += size) {
    chunks.push({
      projects: lists.projects.slice(start, start + size),
      sprints: lists.sprints.slice(start, start + size),
      workItems: lists.workItems.slice(start, start + size),
    });
  }
  return chunks;
}

function emptyLists(): { projects: string[]; sprints: string[]; workItems: string[] } {
  return { projects: [], sprints: [], workItems: [] };
}

function entries(topics: Topics): Array<[keyof TopicLists, readonly string[]]> {
  return [
    ["projects", topics.projects ?? []],
    ["sprints", topics.sprints ?? []],
    ["workItems", topics.workItems ?? []],
  ];
}
