/** A modal dialog: Escape or the backdrop closes it; focus moves into it when it opens. */
import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";
import { t } from "../i18n";
import { Icon } from "./Icon";

interface Props {
  title: string;
  onClose: () => void;
  testid: string;
  wide?: boolean;
  children: ComponentChildren;
}

export function Modal({ title, onClose, testid, wide, children }: Props) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    box.current?.focus();
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && onClose();
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
  return (
    <div class="backdrop" onClick={(e) => e.target === e.currentTarget && onClose()}>
      <div class={`modal ${wide ? "wide" : ""}`} role="dialog" aria-modal="true" aria-label={title}
        data-testid={testid} tabIndex={-1} ref={box}>
        <div class="modal-head">
          <h2>{title}</h2>
          <button class="icon-button" aria-label={t("close")} onClick={onClose}>
            <Icon name="x" />
          </button>
        </div>
        {children}
      </div>
    </div>
  );
}
