/**
 * One message of the shown branch: Markdown for answers (sanitised), plain text for prompts;
 * branch arrows ‹ 2/3 ›; edit (a user edit resends as a new branch, an answer edit is stored as a
 * correction); copy; thumbs with a reason dialog; regenerate; the post-regenerate comparison. An
 * answer's tool calls are shown under its text (a step of a tool loop that only made calls shows
 * just them, and no actions: those belong to the loop's final answer).
 */
import type { ComponentChildren } from "preact";
import { useMemo, useState } from "preact/hooks";
import { api, type Feedback, type Message } from "../api";
import { t } from "../i18n";
import { copyText, handleCopyClick, renderMarkdown } from "../markdown";
import { FeedbackDialog } from "./FeedbackDialog";
import { Icon } from "./Icon";

interface Props {
  message: Message;
  siblings: Message[];
  streaming: boolean;
  locked: boolean;
  onSwitch: (m: Message) => void;
  onEdit: (content: string) => void;
  onRegenerate: () => void;
  onMessage: (m: Message) => void;
  compare: ((choice: "better" | "worse" | "same") => void) | null;
  /** The tool-call cards of an answer that made calls. */
  tools?: ComponentChildren;
  /** A step of a tool loop that a later answer follows: no actions. */
  step?: boolean;
  /** Whose versions the branch arrows page through (a loop's first answer); default: this message. */
  branchOf?: Message;
}

export function MessageView(props: Props) {
  const { message: m, siblings, streaming, locked } = props;
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState(m.content);
  const [note, setNote] = useState("");
  const [dialog, setDialog] = useState<"up" | "down" | null>(null);
  const isUser = m.role === "user";
  const copyLabel = t("copy");
  const html = useMemo(() => (isUser ? "" : renderMarkdown(m.content, copyLabel)), [m.content, isUser, copyLabel]);
  const index = siblings.findIndex((s) => s.id === (props.branchOf ?? m).id);
  const callsOnly = !isUser && !m.content && !!m.tool_calls?.length && !streaming;

  async function saveEdit() {
    const content = draft.trim();
    if (!content) return;
    setEditing(false);
    if (isUser) {
      props.onEdit(content);
    } else {
      await api("POST", `/api/messages/${m.id}/correction`, { content });
      setNote(t("correctionSaved"));
    }
  }

  async function rate(rating: "up" | "down") {
    // The thumb is recorded at once; the dialog's reasons replace it when submitted.
    const feedback = await api<Feedback>("POST", `/api/messages/${m.id}/feedback`, { rating });
    props.onMessage({ ...m, feedback: { ...feedback, rating } });
    setDialog(rating);
  }

  return (
    <article
      class={`message ${m.role} ${props.step ? "step" : ""}`}
      data-testid={isUser ? "user-message" : "assistant-message"}
      data-message-id={m.id}
      data-status={m.status}
    >
      {editing ? (
        <div class="edit-box">
          <textarea data-testid="edit-input" value={draft} rows={Math.min(12, draft.split("\n").length + 1)}
            onInput={(e) => setDraft(e.currentTarget.value)} />
          <div class="edit-actions">
            <button onClick={() => { setEditing(false); setDraft(m.content); }}>{t("cancel")}</button>
            <button class="primary" data-testid="edit-save" onClick={() => void saveEdit()}>
              {isUser ? t("saveAndSubmit") : t("saveCorrection")}
            </button>
          </div>
        </div>
      ) : isUser ? (
        <>
          {!!m.attachments?.length && (
            <div class="user-images">
              {m.attachments.map((a) => (
                <a href={a.url} target="_blank" rel="noopener" key={a.id}>
                  <img data-testid="user-image" src={a.url} width={a.width} height={a.height} alt={t("userImage")}
                    loading="lazy" />
                </a>
              ))}
            </div>
          )}
          {m.content && <div class="bubble">{m.content}</div>}
        </>
      ) : callsOnly ? null : (
        <div
          class={`markdown ${streaming ? "streaming" : ""}`}
          dangerouslySetInnerHTML={{ __html: html }}
          onClick={(e) => handleCopyClick(e, t("copied"))}
        />
      )}
      {props.tools}
      {!isUser && m.status === "stopped" && <p class="status-note">{t("stopped")}</p>}
      {!isUser && m.status === "error" && <p class="status-note error">{t("errorAnswer")}</p>}
      {!isUser && m.status === "interrupted" && <p class="status-note">{t("interrupted")}</p>}
      {note && <p class="status-note">{note}</p>}
      {!editing && !streaming && !props.step && m.status !== "awaiting_approval" && (
        <div class="message-actions">
          {siblings.length > 1 && (
            <span class="branch-nav" data-testid="branch-nav">
              <button class="icon-button" aria-label={t("previousVersion")} data-testid="branch-prev"
                disabled={index <= 0 || locked} onClick={() => props.onSwitch(siblings[index - 1])}>
                <Icon name="left" />
              </button>
              <span data-testid="branch-count">{index + 1}/{siblings.length}</span>
              <button class="icon-button" aria-label={t("nextVersion")} data-testid="branch-next"
                disabled={index >= siblings.length - 1 || locked} onClick={() => props.onSwitch(siblings[index + 1])}>
                <Icon name="right" />
              </button>
            </span>
          )}
          <button class="icon-button" title={t("copyMessage")} aria-label={t("copyMessage")} onClick={() => void copyText(m.content)}>
            <Icon name="copy" />
          </button>
          <button class="icon-button" title={t("edit")} aria-label={t("edit")} data-testid="edit" disabled={locked}
            onClick={() => { setDraft(m.content); setEditing(true); }}>
            <Icon name="pencil" />
          </button>
          {!isUser && (
            <>
              <button class={`icon-button ${m.feedback?.rating === "up" ? "pressed" : ""}`} data-testid="thumb-up"
                title={t("goodResponse")} aria-label={t("goodResponse")} aria-pressed={m.feedback?.rating === "up"}
                onClick={() => void rate("up")}>
                <Icon name="up" />
              </button>
              <button class={`icon-button ${m.feedback?.rating === "down" ? "pressed" : ""}`} data-testid="thumb-down"
                title={t("badResponse")} aria-label={t("badResponse")} aria-pressed={m.feedback?.rating === "down"}
                onClick={() => void rate("down")}>
                <Icon name="down" />
              </button>
              <button class="icon-button" data-testid="regenerate" title={t("regenerate")} aria-label={t("regenerate")}
                disabled={locked} onClick={props.onRegenerate}>
                <Icon name="refresh" />
              </button>
              {m.duel_id && m.voted && m.model && (
                <code class="model-tag" title={t("duelVersionTitle")} data-testid="model-tag">{m.model}</code>
              )}
            </>
          )}
        </div>
      )}
      {props.compare && (
        <div class="compare" data-testid="compare" role="group" aria-label={t("compareQuestion")}>
          <span>{t("compareQuestion")}</span>
          <button data-testid="compare-better" onClick={() => props.compare?.("better")}>{t("better")}</button>
          <button data-testid="compare-worse" onClick={() => props.compare?.("worse")}>{t("worse")}</button>
          <button data-testid="compare-same" onClick={() => props.compare?.("same")}>{t("same")}</button>
        </div>
      )}
      {dialog && (
        <FeedbackDialog
          rating={dialog}
          initial={m.feedback}
          messageId={m.id}
          onClose={() => setDialog(null)}
          onSaved={(feedback) => {
            props.onMessage({ ...m, feedback });
            setDialog(null);
            setNote(t("feedbackThanks"));
          }}
        />
      )}
    </article>
  );
}
