/**
 * The confirmation of a release action, saying what will happen: start a canary (with its share),
 * promote (a refusal by the evaluation gate is shown, with the choice to force it with a reason),
 * end a canary or roll back. Every action may carry a reason, kept in the audit log.
 */
import { useState } from "preact/hooks";
import { api, ApiError } from "../../api";
import type { ReleaseModel } from "../../admin-api";
import { t, tf } from "../../i18n";
import { Modal } from "../Modal";

export type ReleaseAction =
  | { kind: "canary"; model: ReleaseModel; version: string }
  | { kind: "promote"; model: ReleaseModel; version: string }
  | { kind: "rollback"; model: ReleaseModel; previous: string | null };

const REFUSALS = new Set(["not_evaluated", "gate_refused"]);

export function ReleaseDialog({ action, onClose, onDone, onFailed }: {
  action: ReleaseAction;
  onClose: () => void;
  onDone: () => void;
  /** After an error: the action may still have been recorded (e.g. the server saved it, then failed). */
  onFailed: () => void;
}) {
  const m = action.model;
  const id = (v: string | null) => (v ? `${m.name}:${v}` : t("channelNone"));
  const [percent, setPercent] = useState(String(m.canary && action.kind === "canary" && m.canary === action.version
    ? m.canary_percent : 25));
  const [reason, setReason] = useState("");
  const [refusal, setRefusal] = useState("");
  const [force, setForce] = useState(false);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  const share = Number(percent);
  const shareOk = Number.isInteger(share) && share >= 1 && share <= 100;
  let title: string;
  let text: string;
  if (action.kind === "canary") {
    title = t("confirmCanaryTitle");
    text = tf("confirmCanary", { version: id(action.version), percent: shareOk ? share : "?", name: m.name,
      stable: id(m.stable) });
  } else if (action.kind === "promote") {
    title = t("confirmPromoteTitle");
    text = tf("confirmPromote", { version: id(action.version), name: m.name, stable: id(m.stable) });
  } else if (m.canary) {
    title = t("confirmEndCanaryTitle");
    text = tf("confirmEndCanary", { canary: id(m.canary), name: m.name, stable: id(m.stable) });
  } else {
    title = t("confirmRollbackTitle");
    text = tf("confirmRollback", { name: m.name, stable: id(m.stable),
      previous: action.previous ? id(action.previous) : t("previousStable") });
  }
  const needsReason = action.kind === "promote" && force;
  // After a refusal, only a forced promotion (with its reason) can go ahead.
  const ready = !busy && (action.kind !== "canary" || shareOk) && (!refusal || force)
    && (!needsReason || reason.trim() !== "");

  async function submit(e: Event) {
    e.preventDefault();
    if (!ready) return;
    setBusy(true);
    setError("");
    const extra = reason.trim() ? { reason: reason.trim() } : {};
    try {
      if (action.kind === "canary") {
        await api("POST", "/api/admin/releases/canary", { model: id(action.version), percent: share, ...extra });
      } else if (action.kind === "promote") {
        await api("POST", "/api/admin/releases/promote", { model: id(action.version), ...(force ? { force } : {}), ...extra });
      } else {
        await api("POST", "/api/admin/releases/rollback", { name: m.name, ...extra });
      }
      onDone();
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && REFUSALS.has(err.code ?? "")) setRefusal(err.message);
      else {
        setError(err instanceof Error ? err.message : String(err));
        onFailed();
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <Modal title={title} onClose={onClose} testid="release-dialog">
      <form class="stack" onSubmit={(e) => void submit(e)}>
        <p class="confirm-text" data-testid="release-summary">{text}</p>
        {action.kind === "canary" && (
          <label class="field">
            <span>{t("canaryPercent")}</span>
            <input type="number" min={1} max={100} step={1} required data-testid="release-percent" value={percent}
              onInput={(e) => setPercent(e.currentTarget.value)} />
          </label>
        )}
        {refusal && (
          <div class="refusal" role="alert" data-testid="release-refusal">
            <p>{refusal}</p>
            <label class="row toggle">
              <span>
                {t("forcePromote")}
                <small>{t("forceHelp")}</small>
              </span>
              <input type="checkbox" data-testid="release-force" checked={force}
                onChange={(e) => setForce(e.currentTarget.checked)} />
            </label>
          </div>
        )}
        <label class="field">
          <span>{needsReason ? t("reasonRequired") : t("reasonOptional")}</span>
          <input data-testid="release-reason" value={reason} required={needsReason} maxLength={2000}
            onInput={(e) => setReason(e.currentTarget.value)} />
        </label>
        {error && <p class="error" role="alert">{error}</p>}
        <div class="dialog-actions">
          <button type="button" onClick={onClose}>{t("cancel")}</button>
          <button type="submit" class={action.kind === "rollback" || force ? "danger-solid" : "primary"}
            data-testid="release-confirm" disabled={!ready}>
            {force ? t("forceConfirm") : t("confirm")}
          </button>
        </div>
      </form>
    </Modal>
  );
}
