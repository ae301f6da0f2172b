/**
 * The message input: Enter sends, Shift+Enter adds a line; Stop aborts the streaming reply. Images
 * (the attach button, or pasted) are uploaded at once and shown as thumbnails until sent; a
 * rejected one is reported through `onError`. The toolbar under the input holds the attach button,
 * what the chat adds (documents, tools) and Send.
 */
import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { uploadImage, type Attachment } from "../api";
import { t } from "../i18n";
import { Icon } from "./Icon";

const MAX_IMAGES = 4;

/** An image on its way: its local preview, then (uploaded) its attachment. */
interface Pending {
  key: number;
  preview: string;
  attachment: Attachment | null;
}

interface Props {
  busy: boolean;
  disabled: boolean;
  /** Replaces the usual placeholder (e.g. why the composer is disabled). */
  placeholder?: string;
  onSend: (text: string, attachments: Attachment[]) => void;
  onStop: () => void;
  onError: (message: string) => void;
  /** More buttons for the toolbar, after the image button. */
  toolbar?: ComponentChildren;
  /** Shown above the input, beside the images (e.g. document chips). */
  above?: ComponentChildren;
}

let nextKey = 0;

export function Composer({ busy, disabled, placeholder, onSend, onStop, onError, toolbar, above }: Props) {
  const [text, setText] = useState("");
  const [images, setImages] = useState<Pending[]>([]);
  const area = useRef<HTMLTextAreaElement>(null);
  const picker = useRef<HTMLInputElement>(null);

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

  function attach(files: File[]) {
    for (const file of files.slice(0, Math.max(0, MAX_IMAGES - images.length))) {
      const item: Pending = { key: nextKey++, preview: URL.createObjectURL(file), attachment: null };
      setImages((list) => [...list, item]);
      uploadImage(file)
        .then((attachment) => setImages((list) => list.map((p) => (p.key === item.key ? { ...p, attachment } : p))))
        .catch((e: unknown) => {
          remove(item.key);
          onError(e instanceof Error ? e.message : String(e));
        });
    }
    if (images.length + files.length > MAX_IMAGES) onError(t("err_too_many_images"));
  }

  function remove(key: number) {
    setImages((list) => {
      const gone = list.find((p) => p.key === key);
      if (gone) URL.revokeObjectURL(gone.preview);
      return list.filter((p) => p.key !== key);
    });
  }

  const uploading = images.some((p) => !p.attachment);
  const ready = (!!text.trim() || images.length > 0) && !uploading && !disabled;

  function submit() {
    if (!ready || busy) return;
    onSend(text.trim(), images.map((p) => p.attachment as Attachment));
    images.forEach((p) => URL.revokeObjectURL(p.preview));
    setImages([]);
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
      {above}
      {images.length > 0 && (
        <div class="attachments" data-testid="attachments">
          {images.map((p) => (
            <div class={`thumb ${p.attachment ? "" : "uploading"}`} key={p.key} data-testid="attachment-preview">
              <img src={p.preview} alt="" />
              <button type="button" class="thumb-remove" aria-label={t("removeImage")} title={t("removeImage")}
                data-testid="remove-attachment" onClick={() => remove(p.key)}>
                <Icon name="x" />
              </button>
            </div>
          ))}
        </div>
      )}
      <div class="composer-box">
        <input ref={picker} type="file" accept="image/png,image/jpeg,image/webp,image/gif" multiple hidden
          data-testid="attach-input"
          onChange={(e) => {
            attach(Array.from(e.currentTarget.files ?? []));
            e.currentTarget.value = "";
          }} />
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
          onPaste={(e) => {
            const files = Array.from(e.clipboardData?.files ?? []).filter((f) => f.type.startsWith("image/"));
            if (files.length) {
              e.preventDefault();
              attach(files);
            }
          }}
          onKeyDown={(e) => {
            // isComposing: Enter that confirms an IME candidate (e.g. pinyin) must not send.
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
              e.preventDefault();
              submit();
            }
          }}
        />
        <div class="composer-toolbar">
          <button type="button" class="icon-button attach-button" data-testid="attach" aria-label={t("attach")}
            title={t("attach")} disabled={disabled || images.length >= MAX_IMAGES} onClick={() => picker.current?.click()}>
            <Icon name="clip" />
          </button>
          {toolbar}
          <span class="composer-spacer" />
          {busy ? (
            <button type="button" class="round-button" data-testid="stop" aria-label={t("stop")} title={t("stop")}
              onClick={onStop}>
              <Icon name="stop" />
            </button>
          ) : (
            <button type="submit" class="round-button" data-testid="send" aria-label={t("send")} title={t("send")}
              disabled={!ready}>
              <Icon name="send" />
            </button>
          )}
        </div>
      </div>
      <p class="composer-hint">{t("composerHint")}</p>
    </form>
  );
}
