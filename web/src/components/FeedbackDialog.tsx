/** The reason dialog after a thumb: reason tags (docs/api.md) and an optional comment. */
import { useState } from "preact/hooks";
import { api, type Feedback } from "../api";
import { t, type Key } from "../i18n";
import { Modal } from "./Modal";

const REASONS = {
  down: ["incorrect", "not_helpful", "harmful", "too_long", "too_short", "off_topic", "other"],
  up: ["accurate", "helpful", "well_written", "other"],
} as const;

interface Props {
  rating: "up" | "down";
  initial: Feedback | null;
  messageId: string;
  onClose: () => void;
  onSaved: (f: Feedback) => void;
}

export function FeedbackDialog({ rating, initial, messageId, onClose, onSaved }: Props) {
  const sameRating = initial?.rating === rating;
  const [reasons, setReasons] = useState<string[]>(sameRating ? initial.reasons : []);
  const [comment, setComment] = useState(sameRating ? initial.comment : "");
  const [error, setError] = useState("");

  function toggle(tag: string) {
    setReasons((r) => (r.includes(tag) ? r.filter((x) => x !== tag) : [...r, tag]));
  }

  async function submit(e: Event) {
    e.preventDefault();
    try {
      const saved = await api<Feedback>("POST", `/api/messages/${messageId}/feedback`, { rating, reasons, comment });
      onSaved({ rating, reasons: saved.reasons ?? reasons, comment: saved.comment ?? comment });
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  }

  return (
    <Modal title={rating === "up" ? t("feedbackTitleUp") : t("feedbackTitleDown")} onClose={onClose} testid="feedback-dialog">
      <form onSubmit={submit} class="feedback-form">
        <div class="tags">
          {REASONS[rating].map((tag) => (
            <button type="button" class={`tag ${reasons.includes(tag) ? "selected" : ""}`} data-testid={`reason-${tag}`}
              aria-pressed={reasons.includes(tag)} onClick={() => toggle(tag)}>
              {t(`reason_${tag}` as Key)}
            </button>
          ))}
        </div>
        <textarea data-testid="feedback-comment" placeholder={t("feedbackComment")} aria-label={t("feedbackComment")}
          rows={3} value={comment} onInput={(e) => setComment(e.currentTarget.value)} />
        {error && <p class="error">{error}</p>}
        <div class="dialog-actions">
          <button type="button" onClick={onClose}>{t("cancel")}</button>
          <button class="primary" type="submit" data-testid="feedback-submit">{t("submit")}</button>
        </div>
      </form>
    </Modal>
  );
}
