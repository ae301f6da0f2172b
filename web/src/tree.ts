/**
 * The message tree: edits and regenerations are siblings; the shown branch ends at a leaf. A tool
 * loop is a chain in it: assistant (calls) → tool result(s) → assistant (answer).
 */
import type { Message } from "./api";

export class Tree {
  readonly byId = new Map<string, Message>();
  private readonly children = new Map<string | null, Message[]>();

  constructor(messages: Message[]) {
    for (const m of messages) this.byId.set(m.id, m);
    for (const m of messages) {
      const list = this.children.get(m.parent_id) ?? [];
      list.push(m);
      this.children.set(m.parent_id, list);
    }
    for (const list of this.children.values()) list.sort((a, b) => a.created_at.localeCompare(b.created_at));
  }

  siblings(m: Message): Message[] {
    return this.children.get(m.parent_id) ?? [m];
  }

  /** Root-to-leaf path ending at `leafId` (system messages are not shown; tool results are, as cards). */
  path(leafId: string | null): Message[] {
    const out: Message[] = [];
    for (let m = leafId ? this.byId.get(leafId) : undefined; m; m = m.parent_id ? this.byId.get(m.parent_id) : undefined) {
      out.push(m);
    }
    return out.reverse().filter((m) => m.role !== "system");
  }

  /** The newest root's newest leaf: what to show when no branch was chosen yet. */
  latestLeaf(): Message | null {
    const roots = this.children.get(null);
    return roots?.length ? this.newestLeaf(roots[roots.length - 1]) : null;
  }

  /** The leaf reached from `m` by always following the newest child (what ChatGPT shows). */
  newestLeaf(m: Message): Message {
    for (;;) {
      const kids = this.children.get(m.id);
      if (!kids?.length) return m;
      m = kids[kids.length - 1];
    }
  }
}
