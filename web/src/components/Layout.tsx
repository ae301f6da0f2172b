/** Signed-in layout: the conversations sidebar, the chat for the current route, the settings dialog. */
import { useEffect, useState } from "preact/hooks";
import { api, type ConversationSummary, type Model, type User } from "../api";
import { conversationIdOf, navigate } from "../router";
import { Chat } from "./Chat";
import { Settings } from "./Settings";
import { Sidebar } from "./Sidebar";

interface Props {
  user: User;
  models: Model[];
  pathname: string;
  onUser: (u: User) => void;
  onLogout: () => void;
}

export function Layout({ user, models, pathname, onUser, onLogout }: Props) {
  const [conversations, setConversations] = useState<ConversationSummary[]>([]);
  const [query, setQuery] = useState("");
  const [sidebarOpen, setSidebarOpen] = useState(false);
  const [settingsOpen, setSettingsOpen] = useState(false);
  const conversationId = conversationIdOf(pathname);

  function refresh(q = query) {
    const params = new URLSearchParams({ archived: "false" });
    if (q) params.set("q", q);
    return api<ConversationSummary[]>("GET", `/api/conversations?${params}`).then(setConversations);
  }

  useEffect(() => {
    const timer = setTimeout(() => void refresh(query), query ? 250 : 0);
    return () => clearTimeout(timer);
  }, [query]);

  useEffect(() => setSidebarOpen(false), [pathname]);

  return (
    <div class={`layout ${sidebarOpen ? "sidebar-open" : ""}`}>
      <Sidebar
        user={user}
        conversations={conversations}
        activeId={conversationId}
        query={query}
        onQuery={setQuery}
        onChanged={() => refresh()}
        onSettings={() => {
          setSidebarOpen(false);
          setSettingsOpen(true);
        }}
        onClose={() => setSidebarOpen(false)}
      />
      <div class="scrim" onClick={() => setSidebarOpen(false)} />
      <Chat
        conversationId={conversationId}
        title={conversations.find((c) => c.id === conversationId)?.title ?? ""}
        models={models}
        onMenu={() => setSidebarOpen(true)}
        onConversationsChanged={() => refresh()}
      />
      {settingsOpen && (
        <Settings
          user={user}
          onUser={onUser}
          onClose={() => setSettingsOpen(false)}
          onDataDeleted={() => {
            navigate("/");
            void refresh();
          }}
          onLogout={onLogout}
        />
      )}
    </div>
  );
}
