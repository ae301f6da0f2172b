/**
 * A modal dialog: Escape or the backdrop closes it; focus moves into it when it opens. Dialogs can
 * open over dialogs (a confirmation over the settings): Escape closes the topmost only.
 */
import type { ComponentChildren } from "preact";
import { useLayoutEffect, useRef } from "preact/hooks";
import { t } from "../i18n";
import { Icon } from "./Icon";

interface Props {
  title: string;
  onClose: () => void;
  testid: string;
  wide?: boolean;
  /** As wide as the screen allows (the admin area's charts and tables). */
  full?: boolean;
  children: ComponentChildren;
}

/** The dialog drawn on top: the last one in document order (a nested dialog follows its parent). */
function topmost(): Element | undefined {
  const shown = document.querySelectorAll('[role="dialog"][aria-modal="true"]');
  return shown[shown.length - 1];
}

export function Modal({ title, onClose, testid, wide, full, children }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const close = useRef(onClose);
  close.current = onClose;
  // A layout effect: the Escape listener exists from the moment the dialog is drawn (a plain effect ran
  // after paint, and an Escape pressed in between closed the dialog below instead).
  useLayoutEffect(() => {
    box.current?.focus();
    // One Escape closes one dialog. The topmost marks the event handled: a dialog below whose listener
    // runs later (it re-mounted after the one above opened) must not close too, once the top one is gone.
    const onKey = (e: KeyboardEvent) => {
      if (e.key !== "Escape" || e.defaultPrevented || topmost() !== box.current) return;
      e.preventDefault();
      close.current();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
  return (
    <div class="backdrop" onClick={(e) => e.target === e.currentTarget && onClose()}>
      <div class={`modal ${wide ? "wide" : ""} ${full ? "full" : ""}`} role="dialog" aria-modal="true" aria-label={title}
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
