/**
 * A side-by-side vote: while a canary runs, some turns answer twice (stable and canary, in random
 * order, versions hidden). The two answers are shown next to each other (stacked on a phone) as
 * "Response 1" and "Response 2"; once both are written the user is asked which one they prefer,
 * and after the vote each answer shows the version that wrote it.
 */
import { useMemo } from "preact/hooks";
import type { Message } from "../api";
import { t } from "../i18n";
import { handleCopyClick, renderMarkdown } from "../markdown";

interface Props {
  /** The pair, in the order shown. */
  answers: Message[];
  /** After the vote: the answer the conversation continues from. */
  chosenId: string | null;
  /** Whether the turn is still streaming. */
  streaming: boolean;
  /** Set while a vote may be cast (both answers written, not voted yet). */
  onPrefer: ((chosen: Message, rejected: Message) => void) | null;
  voting: boolean;
}

export function Duel({ answers, chosenId, streaming, onPrefer, voting }: Props) {
  const revealed = answers.every((m) => m.voted);
  const head = revealed ? t("duelRevealed") : onPrefer ? t("duelQuestion") : t("duelIntro");
  return (
    <section class={`duel ${revealed ? "revealed" : ""}`} data-testid="duel" data-duel-id={answers[0]?.duel_id ?? ""}
      aria-label={head}>
      <h3 class="duel-head">{head}</h3>
      <div class="duel-grid">
        {answers.map((m, i) => (
          <DuelAnswer
            key={m.id}
            message={m}
            label={`${t("response")} ${i + 1}`}
            chosen={revealed && chosenId === m.id}
            streaming={streaming && m.status === "streaming"}
            onPrefer={onPrefer && !voting ? () => onPrefer(m, answers[1 - i]) : null}
            showPrefer={!!onPrefer}
          />
        ))}
      </div>
    </section>
  );
}

interface AnswerProps {
  message: Message;
  label: string;
  chosen: boolean;
  streaming: boolean;
  showPrefer: boolean;
  onPrefer: (() => void) | null;
}

function DuelAnswer({ message: m, label, chosen, streaming, showPrefer, onPrefer }: AnswerProps) {
  const copyLabel = t("copy");
  const html = useMemo(() => renderMarkdown(m.content, copyLabel), [m.content, copyLabel]);
  return (
    <article class={`duel-answer ${chosen ? "chosen" : ""}`} data-testid="duel-answer" data-message-id={m.id}
      data-status={m.status} data-model={m.model ?? ""} aria-label={label}>
      <header class="duel-answer-head">
        <span class="duel-label">{label}</span>
        {m.voted && m.model && <code class="model-tag" data-testid="duel-model">{m.model}</code>}
        {chosen && <span class="badge" data-testid="duel-chosen">{t("preferred")}</span>}
      </header>
      <div class={`markdown ${streaming ? "streaming" : ""}`} dangerouslySetInnerHTML={{ __html: html }}
        onClick={(e) => handleCopyClick(e, t("copied"))} />
      {m.status === "stopped" && <p class="status-note">{t("stopped")}</p>}
      {m.status === "error" && <p class="status-note error">{t("errorAnswer")}</p>}
      {m.status === "interrupted" && <p class="status-note">{t("interrupted")}</p>}
      {showPrefer && (
        <button class="prefer" data-testid="prefer" disabled={!onPrefer} onClick={() => onPrefer?.()}>
          {t("preferThis")}
        </button>
      )}
    </article>
  );
}
