/**
 * One conversation: loads the message tree, shows the current branch, streams replies (send,
 * edit-and-resend, regenerate), switches branches, asks for a comparison after a regenerate, and
 * shows side-by-side votes (two answers to one message; the chat continues from the preferred one).
 * With tools on, a turn is a loop (answer with calls → results → answer): every step streams through
 * the same event handler, a reply to an approval request too.
 */
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import {
  api, ApiError, streamApproval, streamReply, type Attachment, type Conversation, type Message, type Model,
  type StreamEvent, type ToolInfo,
} from "../api";
import { t } from "../i18n";
import { navigate } from "../router";
import { Tree } from "../tree";
import { Composer } from "./Composer";
import { DocumentButton, DocumentChips, useDocuments } from "./Documents";
import { Duel } from "./Duel";
import { Icon } from "./Icon";
import { MessageView } from "./MessageView";
import { ToolCalls } from "./ToolCalls";
import { ToolsMenu } from "./ToolsMenu";

interface Props {
  conversationId: string | null;
  title: string;
  models: Model[];
  onMenu: () => void;
  onConversationsChanged: () => void;
}

type Comparison = { newId: string; oldId: string };

/** The tool named so: reads the contents of the user's uploaded documents. */
const SEARCH_DOCUMENTS = "search_documents";

type Stream = (signal: AbortSignal, onEvent: (event: StreamEvent) => void) => Promise<void>;

export function Chat({ conversationId, title, models, onMenu, onConversationsChanged }: Props) {
  const [conv, setConv] = useState<Conversation | null>(null);
  const [loadError, setLoadError] = useState("");
  const [error, setError] = useState("");
  const [streaming, setStreaming] = useState<AbortController | null>(null);
  const [compare, setCompare] = useState<Comparison | null>(null);
  const [newChatModel, setNewChatModel] = useState("");
  const [revealed, setRevealed] = useState<string | null>(null); // the duel voted on just now
  const [voting, setVoting] = useState(false);
  const [toast, setToast] = useState(""); // a rejected image, shown for a few seconds
  const [tools, setTools] = useState<{ tools: ToolInfo[]; failed: Record<string, string> }>({ tools: [], failed: {} });
  const [newChatTools, setNewChatTools] = useState<string[]>([]);
  const [running, setRunning] = useState<Set<string>>(new Set()); // tool calls between tool_start and tool_result
  const [decided, setDecided] = useState<{ id: string; approve: boolean } | null>(null);
  const scroller = useRef<HTMLDivElement>(null);
  const stickToBottom = useRef(true);

  useEffect(() => {
    if (conversationId && conversationId === conv?.id) return; // we just created it: keep streaming
    streaming?.abort();
    setConv(null);
    setError("");
    setLoadError("");
    setCompare(null);
    setRevealed(null);
    setDecided(null);
    setRunning(new Set());
    stickToBottom.current = true;
    if (!conversationId) return;
    let current = true; // a slower answer for the previous route must not overwrite this one
    api<Conversation>("GET", `/api/conversations/${conversationId}`)
      .then((c) => current && setConv(c))
      .catch((e) => {
        if (current) setLoadError(e instanceof ApiError && e.status === 404 ? t("notFound") : String(e.message ?? e));
      });
    return () => {
      current = false;
    };
  }, [conversationId]);

  useEffect(() => {
    api<{ tools: ToolInfo[]; failed?: Record<string, string> }>("GET", "/api/tools")
      .then((answer) => setTools({ tools: answer.tools, failed: answer.failed ?? {} }))
      .catch((e) => {
        // A server without the tools API (404) just has no tools button.
        if (!(e instanceof ApiError && e.status === 404)) setToast(e instanceof Error ? e.message : String(e));
      });
  }, []);

  const enabledTools = conv ? conv.tools ?? [] : newChatTools;
  const documents = useDocuments(conv?.id ?? null, setToast, () => {
    // An uploaded document is read through search_documents: offer it to the model.
    if (tools.tools.some((tool) => tool.name === SEARCH_DOCUMENTS) && !enabledTools.includes(SEARCH_DOCUMENTS)) {
      void changeTools([...enabledTools, SEARCH_DOCUMENTS]);
    }
  });

  useEffect(() => {
    if (!toast) return;
    const timer = setTimeout(() => setToast(""), 6000);
    return () => clearTimeout(timer);
  }, [toast]);

  useEffect(() => {
    document.title = conv && title ? `${title} · chatloop` : "chatloop";
  }, [conv, title]);

  const tree = useMemo(() => new Tree(conv?.messages ?? []), [conv?.messages]);
  const branch = useMemo(
    () => tree.path(conv?.current_leaf_id ?? tree.latestLeaf()?.id ?? null),
    [tree, conv?.current_leaf_id],
  );

  useEffect(() => {
    const el = scroller.current;
    if (el && stickToBottom.current) el.scrollTop = el.scrollHeight;
  }, [branch]);

  function update(fn: (c: Conversation) => Conversation) {
    setConv((c) => (c ? fn(c) : c));
  }

  function replaceMessage(m: Message) {
    update((c) => ({ ...c, messages: c.messages.map((x) => (x.id === m.id ? m : x)) }));
  }

  /** Adds messages, or replaces those already there (a continuation may repeat one). */
  function upsert(c: Conversation, added: Message[], leaf?: string): Conversation {
    const fresh = new Map(added.map((m) => [m.id, m]));
    const kept = c.messages.map((m) => fresh.get(m.id) ?? m);
    const known = new Set(c.messages.map((m) => m.id));
    return { ...c, messages: [...kept, ...added.filter((m) => !known.has(m.id))], current_leaf_id: leaf ?? c.current_leaf_id };
  }

  function onEvent(ev: StreamEvent, ids: { assistants: string[] }) {
    if (ev.type === "start") {
      // A side-by-side vote lists both answers; the conversation's leaf is the first.
      const answers = ev.assistant_messages?.length ? ev.assistant_messages : [ev.assistant_message];
      ids.assistants = answers.map((a) => a.id);
      const added = ev.user_message ? [ev.user_message, ...answers] : answers;
      update((c) => upsert(c, added, ev.assistant_message.id));
    } else if (ev.type === "delta") {
      update((c) => ({
        ...c,
        messages: c.messages.map((m) => (m.id === ev.message_id ? { ...m, content: m.content + ev.text } : m)),
      }));
    } else if (ev.type === "assistant_start") {
      ids.assistants.push(ev.assistant_message.id);
      update((c) => upsert(c, [ev.assistant_message], ev.assistant_message.id));
    } else if (ev.type === "tool_start") {
      const { call } = ev;
      setRunning((r) => new Set(r).add(call.id));
      // The call is normally on the message already (its `done`); add it if this event came first.
      update((c) => ({
        ...c,
        messages: c.messages.map((m) => (m.id !== ev.message_id || m.tool_calls?.some((x) => x.id === call.id) ? m : {
          ...m,
          tool_calls: [...(m.tool_calls ?? []), {
            id: call.id, type: "function" as const,
            function: { name: call.name, arguments: typeof call.arguments === "string" ? call.arguments : JSON.stringify(call.arguments) },
          }],
        })),
      }));
    } else if (ev.type === "tool_result") {
      setRunning((r) => {
        const next = new Set(r);
        next.delete(ev.message.tool_call_id ?? "");
        return next;
      });
      update((c) => upsert(c, [ev.message], ev.message.id));
    } else {
      const message = ev.message; // null: an error after the stored answers (e.g. no room for the results)
      if (message) update((c) => upsert(c, [message]));
      if (ev.type === "error") setError(ev.error);
    }
  }

  /** Streams one reply; resolves to the new assistant message id and whether it completed. */
  async function run(stream: Stream): Promise<{ id: string | null; ok: boolean }> {
    const controller = new AbortController();
    const ids = { assistants: [] as string[] };
    setStreaming(controller);
    setError("");
    stickToBottom.current = true;
    let ok = false;
    try {
      await stream(controller.signal, (ev) => onEvent(ev, ids));
      ok = true;
    } catch (e) {
      if (controller.signal.aborted) {
        const stopped = new Set(ids.assistants); // both answers of a side-by-side vote stop together
        update((c) => ({
          ...c,
          messages: c.messages.map((m) => (stopped.has(m.id) && m.status === "streaming" ? { ...m, status: "stopped" } : m)),
        }));
      } else {
        setError(e instanceof Error ? e.message : String(e));
      }
    } finally {
      setStreaming(null);
      setRunning(new Set());
    }
    onConversationsChanged();
    // The server names a new conversation after its first answer; pick the title up shortly after.
    setTimeout(onConversationsChanged, 1500);
    return { id: ids.assistants[0] ?? null, ok };
  }

  async function send(content: string, parentId?: string | null, attachments: Attachment[] = []) {
    setCompare(null);
    setRevealed(null);
    let id = conv?.id;
    if (!id) {
      try {
        const created = await api<Conversation>("POST", "/api/conversations", {
          ...(newChatModel ? { model: newChatModel } : {}),
          ...(newChatTools.length ? { tools: newChatTools } : {}),
        });
        setConv({ ...created, messages: created.messages ?? [] });
        id = created.id;
        navigate(`/c/${id}`);
      } catch (e) {
        setError(e instanceof Error ? e.message : String(e));
        return;
      }
    }
    // compare: this UI can show two answers side by side when the server asks for a vote.
    const images = attachments.length ? { attachments: attachments.map((a) => a.id) } : {};
    const text = content || attachments.length === 0 ? { content } : {}; // an image alone is a message
    const body = parentId === undefined ? { ...text, ...images, compare: true }
      : { ...text, ...images, parent_id: parentId, compare: true };
    const convId = id;
    await run((signal, on) => streamReply(convId, body, signal, on));
  }

  /** `answer`: the first answer of its turn (a tool loop regenerates from the user's message). */
  async function regenerate(answer: Message) {
    if (!conv || !answer.parent_id) return;
    setCompare(null);
    const convId = conv.id;
    const from = answer.parent_id;
    const result = await run((signal, on) => streamReply(convId, { regenerate_from: from }, signal, on));
    if (result.ok && result.id) setCompare({ newId: result.id, oldId: answer.id });
  }

  /** Approves or denies the calls `m` waits on; the loop goes on streaming like a turn. */
  async function decide(m: Message, approve: boolean) {
    if (!conv || streaming) return;
    const convId = conv.id;
    setDecided({ id: m.id, approve });
    const result = await run((signal, on) => streamApproval(m.id, approve, signal, on));
    setDecided(null);
    // The server's record of the loop (statuses, the leaf) is what to show from here on.
    try {
      const fresh = await api<Conversation>("GET", `/api/conversations/${convId}`);
      setConv((c) => (c?.id === convId ? fresh : c));
    } catch (e) {
      if (result.ok) setError(e instanceof Error ? e.message : String(e));
    }
  }

  /** The tools offered to the model: stored on the conversation, or kept until a new chat is created. */
  async function changeTools(next: string[]) {
    if (!conv) return setNewChatTools(next);
    const convId = conv.id;
    const before = conv.tools ?? [];
    update((c) => ({ ...c, tools: next }));
    try {
      const updated = await api<Conversation>("PATCH", `/api/conversations/${convId}`, { tools: next });
      setConv((c) => (c?.id === convId ? { ...c, tools: updated.tools ?? next } : c));
    } catch (e) {
      setConv((c) => (c?.id === convId ? { ...c, tools: before } : c));
      setToast(e instanceof Error ? e.message : String(e));
    }
  }

  function switchTo(target: Message) {
    if (!conv) return;
    const leaf = tree.newestLeaf(target);
    update((c) => ({ ...c, current_leaf_id: leaf.id }));
    void api("PATCH", `/api/conversations/${conv.id}`, { current_leaf_id: leaf.id }).catch((e) => setError(e.message));
  }

  async function answerComparison(choice: "better" | "worse" | "same") {
    if (!compare) return;
    const { newId, oldId } = compare;
    setCompare(null);
    if (choice === "same") return;
    const [chosen, rejected] = choice === "better" ? [newId, oldId] : [oldId, newId];
    await api("POST", "/api/comparisons", { chosen_message_id: chosen, rejected_message_id: rejected }).catch((e) =>
      setError(e.message),
    );
  }

  /** A side-by-side vote: the preferred answer becomes the branch; the reload reveals the versions. */
  async function vote(chosen: Message, rejected: Message) {
    if (!conv || voting) return;
    const convId = conv.id;
    setVoting(true);
    setError("");
    try {
      await api("POST", "/api/comparisons", { chosen_message_id: chosen.id, rejected_message_id: rejected.id });
    } catch (e) {
      // 409: already voted (another tab): show what was stored.
      if (!(e instanceof ApiError && e.status === 409)) {
        setError(e instanceof Error ? e.message : String(e));
        setVoting(false);
        return;
      }
    }
    try {
      const fresh = await api<Conversation>("GET", `/api/conversations/${convId}`);
      setRevealed(chosen.duel_id ?? null);
      setConv((c) => (c?.id === convId ? fresh : c));
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setVoting(false);
    }
  }

  async function changeModel(name: string) {
    if (!conv) return setNewChatModel(name);
    const updated = await api<Conversation>("PATCH", `/api/conversations/${conv.id}`, { model: name });
    update((c) => ({ ...c, model: updated.model ?? name }));
  }

  const defaultModel = models.find((m) => m.default)?.name ?? models[0]?.name ?? "";
  const modelValue = conv?.model || newChatModel || defaultModel;
  const busy = streaming !== null;
  const last = branch[branch.length - 1];
  /** Shown as a side-by-side pair: both answers of a vote, until voted (or just voted on). */
  const isDuel = (m: Message) =>
    m.role === "assistant" && !!m.duel_id && (!m.voted || revealed === m.duel_id)
    && tree.siblings(m).filter((s) => s.duel_id === m.duel_id).length === 2;
  // An unanswered side-by-side vote: the chat continues from the answer the user prefers.
  const pendingVote = !busy && !!last && isDuel(last) && !last.voted;
  // Tool calls waiting for the user: the loop goes on once they are approved or denied.
  const pendingApproval = !busy && !!last && last.role === "assistant" && last.status === "awaiting_approval";

  // The branch's tool results by call, and each answer's place in its turn (a tool loop is one turn).
  const results = new Map(branch.filter((m) => m.role === "tool" && m.tool_call_id).map((m) => [m.tool_call_id!, m]));
  const titles = new Map(tools.tools.map((tool) => [tool.name, tool.title || tool.name]));
  const turnHead = new Map<string, Message>(); // answer id → its turn's first answer
  const followed = new Set<string>(); // answers a later answer of the same turn follows
  let head: Message | null = null;
  let previous: Message | null = null;
  for (const m of branch) {
    if (m.role === "user") {
      head = previous = null;
    } else if (m.role === "assistant") {
      head = head ?? m;
      turnHead.set(m.id, head);
      if (previous) followed.add(previous.id);
      previous = m;
    }
  }

  return (
    <main class="chat">
      <header class="chat-header">
        <button class="icon-button menu-button" aria-label={t("menu")} onClick={onMenu}>
          <Icon name="menu" />
        </button>
        <select
          class="model-picker"
          data-testid="model-picker"
          aria-label={t("model")}
          value={modelValue}
          disabled={busy}
          onChange={(e) => void changeModel(e.currentTarget.value)}
        >
          {models.map((m) => (
            <option value={m.name} title={m.id}>
              {modelLabel(m)}
            </option>
          ))}
        </select>
        <span class="chat-title" data-testid="chat-title">{conv ? title : ""}</span>
        {conv && conv.messages.length > 0 && (
          <a class="icon-button export" data-testid="export" href={`/api/conversations/${conv.id}/export?format=markdown`}
            download title={t("exportMarkdown")} aria-label={t("exportMarkdown")}>
            <Icon name="download" />
          </a>
        )}
      </header>
      <div
        class="thread"
        ref={scroller}
        onScroll={(e) => {
          const el = e.currentTarget;
          stickToBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
        }}
      >
        {loadError && <p class="error banner">{loadError}</p>}
        {!loadError && branch.length === 0 && (
          <div class="empty">
            <h1>{t("emptyTitle")}</h1>
          </div>
        )}
        <div class="messages">
          {branch.filter((m) => m.role !== "tool").map((m) =>
            isDuel(m) ? (
              <Duel
                key={m.id}
                answers={tree.siblings(m).filter((s) => s.duel_id === m.duel_id)}
                chosenId={m.id}
                streaming={busy}
                voting={voting}
                onPrefer={!busy && !m.voted ? (chosen, rejected) => void vote(chosen, rejected) : null}
              />
            ) : (
              <MessageView
                key={m.id}
                message={m}
                siblings={tree.siblings(turnHead.get(m.id) ?? m)}
                branchOf={turnHead.get(m.id)}
                streaming={busy && m.status === "streaming"}
                locked={busy}
                onSwitch={switchTo}
                onEdit={(content) => send(content, m.parent_id)}
                onRegenerate={() => regenerate(turnHead.get(m.id) ?? m)}
                onMessage={replaceMessage}
                compare={compare?.newId === (turnHead.get(m.id) ?? m).id && !followed.has(m.id) ? answerComparison : null}
                step={followed.has(m.id)}
                tools={m.tool_calls?.length ? (
                  <ToolCalls
                    calls={m.tool_calls}
                    results={results}
                    running={running}
                    titles={titles}
                    awaiting={m.status === "awaiting_approval"}
                    decided={decided?.id === m.id ? decided.approve : null}
                    onDecide={busy ? null : (approve) => void decide(m, approve)}
                  />
                ) : undefined}
              />
            ),
          )}
        </div>
        {error && (
          <p class="error banner" role="alert">
            {error}
          </p>
        )}
      </div>
      <Composer busy={busy} disabled={!!loadError || pendingVote || pendingApproval}
        placeholder={pendingVote ? t("duelPickToContinue") : pendingApproval ? t("toolApprovalToContinue") : undefined}
        onSend={(text, attachments) => void send(text, last ? last.id : null, attachments)}
        onStop={() => streaming?.abort()} onError={setToast}
        above={<DocumentChips documents={documents} />}
        toolbar={(
          <>
            <DocumentButton documents={documents} disabled={!!loadError} />
            {(tools.tools.length > 0 || Object.keys(tools.failed).length > 0) && (
              <ToolsMenu tools={tools.tools} failed={tools.failed} enabled={enabledTools} disabled={busy || !!loadError}
                onChange={(next) => void changeTools(next)} />
            )}
          </>
        )} />
      {toast && (
        <div class="toast error" role="alert" data-testid="toast">
          {toast}
        </div>
      )}
    </main>
  );
}

/** The picker's label: the name, and for administrators what answers it now (stable, canary share). */
function modelLabel(m: Model): string {
  const about = [m.params, m.languages?.join(", ")].filter(Boolean).join(" · ");
  const name = about ? `${m.name} (${about})` : m.name;
  if (!m.stable) return name;
  const canary = m.canary ? ` · ${t("canary")} ${m.canary} ${m.canary_percent ?? 0}%` : "";
  return `${name} · ${m.stable}${canary}`;
}
