/** The message input: Enter sends, Shift+Enter adds a line; Stop aborts the streaming reply. */
import { useEffect, useRef, useState } from "preact/hooks";
import { t } from "../i18n";
import { Icon } from "./Icon";

interface Props {
  busy: boolean;
  disabled: boolean;
  /** Replaces the usual placeholder (e.g. why the composer is disabled). */
  placeholder?: string;
  onSend: (text: string) => void;
  onStop: () => void;
}

export function Composer({ busy, disabled, placeholder, onSend, onStop }: Props) {
  const [text, setText] = useState("");
  const area = useRef<HTMLTextAreaElement>(null);

  // Ready to type on a desktop; on a phone, focusing would pop the keyboard over the page.
  useEffect(() => {
    if (window.matchMedia("(min-width: 769px)").matches) area.current?.focus();
  }, []);

  function grow() {
    const el = area.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight, 240)}px`;
  }

  function submit() {
    const value = text.trim();
    if (!value || busy || disabled) return;
    onSend(value);
    setText("");
    requestAnimationFrame(grow);
  }

  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      <div class="composer-box">
        <textarea
          ref={area}
          data-testid="composer"
          rows={1}
          placeholder={placeholder ?? t("composerPlaceholder")}
          aria-label={placeholder ?? t("composerPlaceholder")}
          value={text}
          disabled={disabled}
          onInput={(e) => {
            setText(e.currentTarget.value);
            grow();
          }}
          onKeyDown={(e) => {
            // isComposing: Enter that confirms an IME candidate (e.g. pinyin) must not send.
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
              e.preventDefault();
              submit();
            }
          }}
        />
        {busy ? (
          <button type="button" class="round-button" data-testid="stop" aria-label={t("stop")} title={t("stop")} onClick={onStop}>
            <Icon name="stop" />
          </button>
        ) : (
          <button type="submit" class="round-button" data-testid="send" aria-label={t("send")} title={t("send")} disabled={!text.trim() || disabled}>
            <Icon name="send" />
          </button>
        )}
      </div>
      <p class="composer-hint">{t("composerHint")}</p>
    </form>
  );
}
