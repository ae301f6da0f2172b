/**
 * Documents for retrieval (the `search_documents` tool): an upload button and chips with a remove
 * button. A conversation's documents are listed from the server; one uploaded before the chat
 * exists goes to the user's library (searched from every chat) and keeps its chip here.
 */
import { useEffect, useRef, useState } from "preact/hooks";
import { api, uploadDocument, type DocumentInfo } from "../api";
import { t, tf } from "../i18n";
import { Icon } from "./Icon";

export const DOCUMENT_TYPES = ".txt,.md,.csv,.json,.html,.pdf";

/** A chip: a stored document, or a file still uploading (`key` only). */
interface Chip {
  key: string;
  filename: string;
  doc: DocumentInfo | null;
}

export interface Documents {
  chips: Chip[];
  upload: (files: File[]) => void;
  remove: (chip: Chip) => void;
}

let nextKey = 0;

/** The documents shown for `conversationId` (null: a new chat); `onUploaded` runs after each upload. */
export function useDocuments(conversationId: string | null, onError: (message: string) => void,
  onUploaded: () => void): Documents {
  const [chips, setChips] = useState<Chip[]>([]);
  const shown = useRef<string | null>(null);
  const uploaded = useRef(onUploaded);
  uploaded.current = onUploaded; // runs after the upload: the caller's state of then, not of the click

  useEffect(() => {
    const previous = shown.current;
    shown.current = conversationId;
    // Library documents uploaded in a new chat stay shown once it is created (they are searched there).
    const keep = previous === null && conversationId !== null;
    setChips((list) => (keep ? list.filter((c) => !c.doc || c.doc.conversation_id === null) : []));
    if (!conversationId) return;
    let current = true;
    api<DocumentInfo[]>("GET", `/api/documents?conversation_id=${encodeURIComponent(conversationId)}`)
      .then((docs) => {
        if (!current) return;
        const oldestFirst = [...docs].sort((a, b) => a.created_at.localeCompare(b.created_at));
        setChips((list) => [
          ...oldestFirst.map((doc) => ({ key: doc.id, filename: doc.filename, doc })),
          ...list.filter((c) => !docs.some((d) => d.id === c.key)),
        ]);
      })
      .catch((e: unknown) => current && onError(e instanceof Error ? e.message : String(e)));
    return () => {
      current = false;
    };
  }, [conversationId]);

  function upload(files: File[]) {
    for (const file of files) {
      const key = `upload-${nextKey++}`;
      setChips((list) => [...list, { key, filename: file.name, doc: null }]);
      uploadDocument(file, conversationId)
        .then((doc) => {
          // The same file again is the same document (the server answers the stored one): one chip.
          setChips((list) => (list.some((c) => c.key === doc.id) ? list.filter((c) => c.key !== key)
            : list.map((c) => (c.key === key ? { key: doc.id, filename: doc.filename, doc } : c))));
          uploaded.current();
        })
        .catch((e: unknown) => {
          setChips((list) => list.filter((c) => c.key !== key));
          onError(tf("documentFailed", { name: file.name, why: e instanceof Error ? e.message : String(e) }));
        });
    }
  }

  function remove(chip: Chip) {
    if (!chip.doc) return;
    setChips((list) => list.filter((c) => c.key !== chip.key));
    api("DELETE", `/api/documents/${chip.doc.id}`).catch((e: unknown) => {
      setChips((list) => [...list, chip]);
      onError(e instanceof Error ? e.message : String(e));
    });
  }

  return { chips, upload, remove };
}

export function DocumentButton({ documents, disabled }: { documents: Documents; disabled: boolean }) {
  const picker = useRef<HTMLInputElement>(null);
  return (
    <>
      <input ref={picker} type="file" accept={DOCUMENT_TYPES} multiple hidden data-testid="document-input"
        onChange={(e) => {
          documents.upload(Array.from(e.currentTarget.files ?? []));
          e.currentTarget.value = "";
        }} />
      <button type="button" class="icon-button" data-testid="attach-document" aria-label={t("attachDocument")}
        title={t("attachDocumentHelp")} disabled={disabled} onClick={() => picker.current?.click()}>
        <Icon name="file" />
      </button>
    </>
  );
}

export function DocumentChips({ documents }: { documents: Documents }) {
  if (!documents.chips.length) return null;
  return (
    <div class="doc-chips" data-testid="documents">
      {documents.chips.map((chip) => {
        const library = chip.doc !== null && chip.doc.conversation_id === null;
        const about = chip.doc
          ? [formatSize(chip.doc.bytes), tf("documentChunks", { n: chip.doc.chunks }), library ? t("inLibrary") : ""]
            .filter(Boolean).join(" · ")
          : t("uploading");
        return (
          <span key={chip.key} class={`doc-chip ${chip.doc ? "" : "uploading"} ${library ? "library" : ""}`}
            data-testid="document-chip" data-state={chip.doc ? "ready" : "uploading"} title={`${chip.filename} · ${about}`}>
            {chip.doc ? <Icon name="file" /> : <span class="spinner" aria-hidden="true" />}
            <span class="doc-name">{chip.filename}</span>
            <small class="inline">{about}</small>
            {chip.doc && (
              <button type="button" class="doc-remove" data-testid="remove-document" aria-label={t("removeDocument")}
                title={t("removeDocument")} onClick={() => documents.remove(chip)}>
                <Icon name="x" />
              </button>
            )}
          </span>
        );
      })}
    </div>
  );
}

function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10 * 1024 ? 1 : 0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
