/**
 * The tool calls an assistant message made, as collapsible cards under it: the tool, how long it
 * took, whether it failed; opened, the arguments (JSON) and the result the model read, with the
 * passages a retrieval found. Calls that wait for the user (tools not marked read-only) are shown
 * open, with Approve / Deny.
 */
import { useState } from "preact/hooks";
import type { Message, Snippet, ToolCall } from "../api";
import { t, tf } from "../i18n";
import { Icon } from "./Icon";

/** Where a call stands: run, failed, declined, running now, waiting for the user, never run (stopped). */
type CallState = "done" | "error" | "declined" | "running" | "pending" | "missing";

/** What the server tells the model about a declined call (serving/tool_loop.py), for results stored
 * before `tool.declined` was recorded. */
const DECLINED_PREFIX = "The user declined";

interface Props {
  calls: ToolCall[];
  /** The `tool` messages of the branch, by the call they answer. */
  results: Map<string, Message>;
  /** Calls running now (between `tool_start` and `tool_result`). */
  running: Set<string>;
  /** Tool titles by name, from GET /api/tools. */
  titles: Map<string, string>;
  /** The message waits for the user's decision on its calls without a result. */
  awaiting: boolean;
  /** The user's decision, once given (its stream is on its way). */
  decided: boolean | null;
  /** Answers the waiting calls; null while that cannot be done (another reply is streaming). */
  onDecide: ((approve: boolean) => void) | null;
}

export function ToolCalls({ calls, results, running, titles, awaiting, decided, onDecide }: Props) {
  const stateOf = (call: ToolCall): CallState => {
    const result = results.get(call.id);
    if (result?.tool?.declined || (result?.tool?.is_error && result.content.startsWith(DECLINED_PREFIX))) {
      return "declined";
    }
    if (result) return result.tool?.is_error ? "error" : "done";
    if (running.has(call.id) || decided === true) return "running";
    if (awaiting && decided === null) return "pending";
    return "missing";
  };
  const pending = calls.filter((c) => stateOf(c) === "pending");
  return (
    <div class="tool-calls">
      {calls.map((call) => (
        <ToolCallCard key={call.id} call={call} result={results.get(call.id) ?? null} state={stateOf(call)}
          title={titles.get(call.function.name) ?? call.function.name} />
      ))}
      {pending.length > 0 && (
        <div class="tool-approval" data-testid="tool-approval" role="group" aria-label={t("toolApprovalQuestion")}>
          <p>
            <Icon name="alert" />
            <span>{pending.length === 1 ? t("toolApprovalQuestion") : tf("toolApprovalQuestionMany", { n: pending.length })}</span>
          </p>
          <div class="tool-approval-actions">
            <button data-testid="tool-deny" disabled={!onDecide} onClick={() => onDecide?.(false)}>{t("toolDeny")}</button>
            <button class="primary" data-testid="tool-approve" disabled={!onDecide} onClick={() => onDecide?.(true)}>
              {t("toolApprove")}
            </button>
          </div>
        </div>
      )}
    </div>
  );
}

function ToolCallCard({ call, result, state, title }: { call: ToolCall; result: Message | null; state: CallState; title: string }) {
  const [open, setOpen] = useState<boolean | null>(null); // null: the state decides (a waiting call is open)
  const expanded = open ?? state === "pending";
  const args = result?.tool?.arguments ?? parseArguments(call.function.arguments);
  const snippets = snippetsOf(result?.tool?.data);
  const duration = result?.tool?.duration_ms;
  const label = {
    done: tf("toolUsed", { name: title }),
    error: tf("toolFailed", { name: title }),
    running: tf("toolRunning", { name: title }),
    pending: tf("toolPending", { name: title }),
    missing: tf("toolNotRun", { name: title }),
    declined: tf("toolDeclined", { name: title }),
  }[state];
  return (
    <div class={`tool-call ${state}`} data-testid="tool-call" data-tool-name={call.function.name} data-state={state}>
      <button type="button" class="tool-call-head" aria-expanded={expanded} data-testid="tool-call-toggle"
        onClick={() => setOpen(!expanded)}>
        {state === "running" ? <span class="spinner" data-testid="tool-call-spinner" aria-hidden="true" />
          : <Icon name={state === "error" ? "alert" : state === "done" ? "check" : state === "declined" ? "x" : "wrench"} />}
        <span class="tool-call-label">{label}</span>
        {duration != null && <span class="tool-call-time" data-testid="tool-call-duration">{formatDuration(duration)}</span>}
        <span class={`tool-call-chevron ${expanded ? "open" : ""}`}><Icon name="chevron" /></span>
      </button>
      {expanded && (
        <div class="tool-call-body">
          <div class="tool-call-section">
            <span>{t("toolArguments")}</span>
            <code class="tool-call-name">{call.function.name}</code>
          </div>
          <pre data-testid="tool-call-arguments">{typeof args === "string" ? args : JSON.stringify(args, null, 2)}</pre>
          {result && (
            <>
              <div class="tool-call-section"><span>{result.tool?.is_error ? t("toolError") : t("toolResult")}</span></div>
              <pre class={result.tool?.is_error ? "error" : ""} data-testid="tool-call-result">{result.content}</pre>
              {result.tool?.truncated && <p class="status-note">{t("toolTruncated")}</p>}
            </>
          )}
          {snippets.length > 0 && (
            <ol class="snippets" data-testid="tool-snippets">
              {snippets.map((s) => (
                <li key={`${s.document_id}:${s.chunk_index}`} data-testid="tool-snippet">
                  <div class="snippet-head">
                    <Icon name="file" />
                    <span class="snippet-file">{s.filename}</span>
                    {Number.isInteger(s.chunk_index) && (
                      <span class="muted" title={typeof s.score === "number" ? tf("snippetScore", { score: s.score.toFixed(3) }) : undefined}>
                        {tf("snippetChunk", { chunk: s.chunk_index + 1 })}
                      </span>
                    )}
                  </div>
                  <p>{s.text}</p>
                </li>
              ))}
            </ol>
          )}
        </div>
      )}
    </div>
  );
}

/** The call's arguments as an object, or its text as written when that is not JSON. */
function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function snippetsOf(data: unknown): Snippet[] {
  if (!Array.isArray(data)) return [];
  return data.filter((s): s is Snippet => !!s && typeof s === "object" && typeof s.filename === "string"
    && typeof s.text === "string");
}

function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}
