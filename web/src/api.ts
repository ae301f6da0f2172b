/** The app API client (docs/api.md): JSON fetch with double-submit CSRF, and the SSE reply stream. */
import { errorText, t } from "./i18n";

export interface User {
  id: string;
  email: string;
  is_admin: boolean;
  train_opt_in: boolean;
  custom_instructions: string;
  locale: string;
  theme: string;
  created_at: string;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  created_at: string;
  last_used_at: string | null;
  revoked: boolean;
  key?: string;
}

export interface Model {
  id: string;
  name: string;
  default: boolean;
  /** Administrators only: the exact versions of the release channels (`NAME:VERSION`). */
  stable?: string | null;
  canary?: string | null;
  canary_percent?: number;
  /** From the model catalog, where it knows the name: languages (ISO codes) and size ("0.5B"). */
  languages?: string[];
  params?: string;
}

export interface Feedback {
  rating: "up" | "down";
  reasons: string[];
  comment: string;
}

/** An uploaded image (POST /api/uploads); `url` returns it to its owner. */
export interface Attachment {
  id: string;
  mime: string;
  bytes: number;
  width: number;
  height: number;
  url: string;
}

/** A call an assistant message made (OpenAI's shape: `arguments` is JSON text). */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** What a `tool` message records about the call it answers. */
export interface ToolRun {
  name: string;
  arguments: Record<string, unknown> | null;
  is_error: boolean;
  duration_ms: number | null;
  truncated: boolean;
  /** The user declined to run the call. */
  declined?: boolean;
  /** Structured extras, e.g. retrieval snippets; null for most tools. */
  data: unknown;
}

/** One passage `search_documents` found (a `tool` message's `tool.data`). */
export interface Snippet {
  n: number;
  document_id: string;
  filename: string;
  chunk_index: number;
  score: number;
  text: string;
}

/** A tool the server offers (GET /api/tools); `source` is `builtin`, `mcp:SERVER` or `openapi:PLUGIN`. */
export interface ToolInfo {
  name: string;
  title: string | null;
  description: string;
  read_only: boolean;
  source: string;
  parameters: Record<string, unknown>;
}

/** A document uploaded for retrieval: a conversation's, or the user's library (no conversation). */
export interface DocumentInfo {
  id: string;
  filename: string;
  mime: string;
  bytes: number;
  sha256: string;
  created_at: string;
  /** Passages the document was split into for search. */
  chunks: number;
  conversation_id: string | null;
}

export interface Message {
  id: string;
  conversation_id: string;
  parent_id: string | null;
  role: "user" | "assistant" | "system" | "tool";
  content: string;
  status: "streaming" | "complete" | "stopped" | "error" | "interrupted" | "awaiting_approval";
  model: string | null;
  created_at: string;
  finish_reason: string | null;
  feedback: Feedback | null;
  /** The two answers of a side-by-side vote share one; null otherwise. */
  duel_id?: string | null;
  /** For a side-by-side answer: whether the pair has been voted on (`model` is null until then). */
  voted?: boolean | null;
  /** A user message's images, shown before its text. */
  attachments?: Attachment[];
  /** An assistant message's calls (finish_reason `tool_calls`). */
  tool_calls?: ToolCall[] | null;
  /** A `tool` message: the call it answers, and how the call went. */
  tool_call_id?: string | null;
  tool?: ToolRun | null;
}

export interface ConversationSummary {
  id: string;
  title: string | null;
  model: string | null;
  archived: boolean;
  current_leaf_id: string | null;
  /** The tools this conversation offers the model (names from GET /api/tools). */
  tools?: string[];
  created_at: string;
  updated_at: string;
}

export interface Conversation extends ConversationSummary {
  system_prompt: string | null;
  messages: Message[];
}

export type StreamEvent =
  | { type: "start"; user_message: Message | null; assistant_message: Message; assistant_messages?: Message[] }
  | { type: "delta"; message_id: string; text: string }
  | { type: "done"; message: Message }
  | { type: "error"; message: Message | null; error: string }
  | { type: "tool_start"; message_id: string; call: { id: string; name: string; arguments: unknown } }
  | { type: "tool_result"; message: Message }
  | { type: "assistant_start"; assistant_message: Message }
  | { type: "approval"; message: Message; calls: { id: string; name: string; arguments: unknown; read_only: boolean }[] };

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The server's error code (`error.code`), e.g. `not_evaluated`. */
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

/** Fired when the server answers 401 to a signed-in call (session expired or revoked). */
export const SIGNED_OUT = "chatloop:signed-out";

/** Fired after a release action: what the model picker shows has changed. */
export const MODELS_CHANGED = "chatloop:models-changed";

const UNSAFE = new Set(["POST", "PATCH", "PUT", "DELETE"]);

function csrfToken(): string {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (UNSAFE.has(method)) headers["X-CSRF-Token"] = csrfToken();
  return fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    signal,
  }).catch((e: unknown) => {
    if (e instanceof DOMException && e.name === "AbortError") throw e;
    throw new ApiError(0, t("networkError"));
  });
}

async function raiseFor(res: Response): Promise<never> {
  let message = `${res.status} ${res.statusText}`;
  let code: string | null = null;
  try {
    const data = await res.json();
    if (data?.error?.message) message = errorText(data.error.code, data.error.message);
    code = data?.error?.code ?? null;
  } catch {
    // Not JSON (e.g. a proxy's HTML error page): the status line is the best message there is.
  }
  throw new ApiError(res.status, message, code);
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await request(method, path, body);
  if (res.status === 401 && !path.startsWith("/api/auth/")) window.dispatchEvent(new Event(SIGNED_OUT));
  if (!res.ok) return raiseFor(res);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

/** Upload an image (the request body is the file itself, typed by its Content-Type). */
export async function uploadImage(file: File): Promise<Attachment> {
  const res = await fetch("/api/uploads", {
    method: "POST",
    headers: { "Content-Type": file.type || "application/octet-stream", "X-CSRF-Token": csrfToken() },
    body: file,
    credentials: "same-origin",
  }).catch(() => {
    throw new ApiError(0, t("networkError"));
  });
  if (!res.ok) return raiseFor(res);
  return (await res.json()) as Attachment;
}

/** Upload a document for retrieval (multipart); without a conversation it goes to the user's library. */
export async function uploadDocument(file: File, conversationId: string | null): Promise<DocumentInfo> {
  const form = new FormData();
  form.append("file", file);
  if (conversationId) form.append("conversation_id", conversationId);
  const res = await fetch("/api/documents", {
    method: "POST",
    headers: { "X-CSRF-Token": csrfToken() }, // the browser writes the multipart Content-Type itself
    body: form,
    credentials: "same-origin",
  }).catch(() => {
    throw new ApiError(0, t("networkError"));
  });
  if (!res.ok) return raiseFor(res);
  return (await res.json()) as DocumentInfo;
}

/** Stream a turn: POST a message (or a regenerate) to a conversation. */
export function streamReply(
  conversationId: string,
  body: Record<string, unknown>,
  signal: AbortSignal,
  onEvent: (event: StreamEvent) => void,
): Promise<void> {
  return streamPost(`/api/conversations/${conversationId}/messages`, body, signal, onEvent);
}

/** Answer the tool calls an assistant message waits on; the turn continues as the same stream. */
export function streamApproval(
  messageId: string,
  approve: boolean,
  signal: AbortSignal,
  onEvent: (event: StreamEvent) => void,
): Promise<void> {
  return streamPost(`/api/messages/${messageId}/approval`, { approve }, signal, onEvent);
}

/**
 * POST and call `onEvent` for every SSE event until `data: [DONE]`.
 * It is a POST, so EventSource cannot be used: the body is read as a stream and split into
 * events at blank lines; each event's `data:` lines joined by newlines are its payload.
 */
async function streamPost(
  path: string,
  body: Record<string, unknown>,
  signal: AbortSignal,
  onEvent: (event: StreamEvent) => void,
): Promise<void> {
  const res = await request("POST", path, body, signal);
  if (!res.ok) return raiseFor(res);
  if (!res.body) throw new ApiError(res.status, "empty response stream");
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let boundary: RegExpExecArray | null;
    while ((boundary = /\r?\n\r?\n/.exec(buffer))) {
      const block = buffer.slice(0, boundary.index);
      buffer = buffer.slice(boundary.index + boundary[0].length);
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") {
        await reader.cancel();
        return;
      }
      onEvent(JSON.parse(data) as StreamEvent);
    }
  }
}
