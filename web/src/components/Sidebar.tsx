/** Conversations sidebar: new chat, search, list with rename and delete, settings entry. */
import { useRef, useState } from "preact/hooks";
import { api, type ConversationSummary, type User } from "../api";
import { t } from "../i18n";
import { navigate } from "../router";
import { Icon } from "./Icon";

interface Props {
  user: User;
  conversations: ConversationSummary[];
  activeId: string | null;
  query: string;
  onQuery: (q: string) => void;
  onChanged: () => void;
  onSettings: () => void;
  onClose: () => void;
}

export function Sidebar(props: Props) {
  const [renaming, setRenaming] = useState<string | null>(null);
  const [title, setTitle] = useState("");
  // Enter, Escape and blur can all end one edit (the input's removal blurs it): act only once.
  const open = useRef<string | null>(null);

  function startRename(c: ConversationSummary) {
    open.current = c.id;
    setTitle(c.title ?? "");
    setRenaming(c.id);
  }

  function cancelRename() {
    open.current = null;
    setRenaming(null);
  }

  async function rename(id: string) {
    if (open.current !== id) return;
    cancelRename();
    const value = title.trim();
    if (!value) return;
    await api("PATCH", `/api/conversations/${id}`, { title: value });
    props.onChanged();
  }

  async function remove(c: ConversationSummary) {
    if (!confirm(`${t("confirmDelete")}\n${c.title ?? t("untitled")}`)) return;
    await api("DELETE", `/api/conversations/${c.id}`);
    if (props.activeId === c.id) navigate("/");
    props.onChanged();
  }

  return (
    <aside class="sidebar" aria-label={t("menu")}>
      <div class="sidebar-top">
        <button class="new-chat" data-testid="new-chat" onClick={() => { navigate("/"); props.onClose(); }}>
          <Icon name="plus" /> {t("newChat")}
        </button>
        <button class="icon-button close-sidebar" aria-label={t("close")} onClick={props.onClose}>
          <Icon name="x" />
        </button>
      </div>
      <input
        class="search"
        type="search"
        data-testid="search"
        placeholder={t("search")}
        aria-label={t("search")}
        value={props.query}
        onInput={(e) => props.onQuery(e.currentTarget.value)}
      />
      <nav class="conversation-list">
        {props.conversations.length === 0 && <p class="muted">{t("noChats")}</p>}
        {props.conversations.map((c) => (
          <div class={`conversation-item ${c.id === props.activeId ? "active" : ""}`} key={c.id} data-testid="conversation">
            {renaming === c.id ? (
              <form class="rename-form" onSubmit={(e) => { e.preventDefault(); void rename(c.id); }}>
                <input
                  value={title}
                  aria-label={t("rename")}
                  ref={(el) => el?.focus()}
                  onInput={(e) => setTitle(e.currentTarget.value)}
                  onBlur={() => void rename(c.id)}
                  onKeyDown={(e) => e.key === "Escape" && cancelRename()}
                />
              </form>
            ) : (
              <a href={`/c/${c.id}`} onClick={(e) => { e.preventDefault(); navigate(`/c/${c.id}`); }}>
                {c.title || t("untitled")}
              </a>
            )}
            <span class="item-actions">
              <button class="icon-button" title={t("rename")} aria-label={t("rename")}
                onClick={() => startRename(c)}>
                <Icon name="pencil" />
              </button>
              <button class="icon-button" title={t("delete")} aria-label={t("delete")} onClick={() => void remove(c)}>
                <Icon name="trash" />
              </button>
            </span>
          </div>
        ))}
      </nav>
      <button class="sidebar-user" data-testid="settings" onClick={props.onSettings}>
        <Icon name="gear" /> <span>{props.user.email}</span>
      </button>
    </aside>
  );
}
