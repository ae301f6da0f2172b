/**
 * Settings: theme and language; custom instructions; data controls (training opt-in, delete all
 * my data); API keys (list, create — the secret is shown once — and revoke); log out; and for
 * administrators, the admin tab.
 */
import { useEffect, useState } from "preact/hooks";
import { api, type ApiKey, type User } from "../api";
import { LOCALES, locale, setLocale, t } from "../i18n";
import { getTheme, setTheme } from "../theme";
import { Admin } from "./Admin";
import { Modal } from "./Modal";

type Tab = "general" | "personalization" | "dataControls" | "apiKeys" | "admin";

interface Props {
  user: User;
  onUser: (u: User) => void;
  onClose: () => void;
  onDataDeleted: () => void;
  onLogout: () => void;
}

export function Settings({ user, onUser, onClose, onDataDeleted, onLogout }: Props) {
  const [tab, setTab] = useState<Tab>("general");
  const [error, setError] = useState("");
  const [note, setNote] = useState("");

  async function patchMe(body: Partial<User>) {
    setError("");
    try {
      onUser(await api<User>("PATCH", "/api/me", body));
      return true;
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
      return false;
    }
  }

  const tabs: Tab[] = ["general", "personalization", "dataControls", "apiKeys", ...(user.is_admin ? ["admin" as const] : [])];
  return (
    <Modal title={t("settings")} onClose={onClose} testid="settings-dialog" wide full={tab === "admin"}>
      <div class="settings">
        <nav class="settings-tabs" role="tablist">
          {tabs.map((id) => (
            <button role="tab" aria-selected={tab === id} class={tab === id ? "selected" : ""} data-testid={`tab-${id}`}
              onClick={() => { setTab(id); setNote(""); setError(""); }}>
              {t(id)}
            </button>
          ))}
        </nav>
        <section class="settings-body">
          {tab === "general" && (
            <>
              <label class="row">
                <span>{t("theme")}</span>
                <select data-testid="theme-select" value={getTheme()} onChange={(e) => {
                  const theme = e.currentTarget.value;
                  setTheme(theme);
                  void patchMe({ theme });
                }}>
                  <option value="system">{t("themeSystem")}</option>
                  <option value="light">{t("themeLight")}</option>
                  <option value="dark">{t("themeDark")}</option>
                </select>
              </label>
              <label class="row">
                <span>{t("language")}</span>
                <select data-testid="locale-select" value={locale.get()} onChange={(e) => {
                  const value = e.currentTarget.value;
                  setLocale(value);
                  void patchMe({ locale: value });
                }}>
                  {LOCALES.map((l) => <option value={l.id}>{l.label}</option>)}
                </select>
              </label>
              <div class="row">
                <span>{user.email}</span>
                <button data-testid="logout" onClick={() => void api("POST", "/api/auth/logout").then(onLogout)}>
                  {t("logOut")}
                </button>
              </div>
            </>
          )}
          {tab === "personalization" && <Instructions user={user} save={patchMe} />}
          {tab === "dataControls" && (
            <>
              <label class="row toggle">
                <span>
                  {t("improveModel")}
                  <small>{t("improveModelHelp")}</small>
                </span>
                <input type="checkbox" role="switch" data-testid="train-opt-in" checked={user.train_opt_in}
                  onChange={(e) => void patchMe({ train_opt_in: e.currentTarget.checked })} />
              </label>
              <div class="row">
                <span>
                  {t("deleteAllData")}
                  <small>{t("deleteAllDataHelp")}</small>
                </span>
                <button class="danger" data-testid="delete-all-data" onClick={async () => {
                  if (!confirm(t("confirmDeleteAll"))) return;
                  await api("DELETE", "/api/me/data");
                  setNote(t("dataDeleted"));
                  onDataDeleted();
                }}>
                  {t("delete")}
                </button>
              </div>
            </>
          )}
          {tab === "apiKeys" && <Keys onError={setError} />}
          {tab === "admin" && <Admin me={user} onError={setError} />}
          {note && <p class="status-note" role="status">{note}</p>}
          {error && <p class="error" role="alert">{error}</p>}
        </section>
      </div>
    </Modal>
  );
}

function Instructions({ user, save }: { user: User; save: (b: Partial<User>) => Promise<boolean> }) {
  const [text, setText] = useState(user.custom_instructions ?? "");
  const [saved, setSaved] = useState(false);
  return (
    <form class="stack" onSubmit={async (e) => {
      e.preventDefault();
      setSaved(await save({ custom_instructions: text }));
    }}>
      <label for="custom-instructions">{t("customInstructions")}</label>
      <small>{t("customInstructionsHelp")}</small>
      <textarea id="custom-instructions" data-testid="custom-instructions" rows={6} value={text}
        onInput={(e) => { setText(e.currentTarget.value); setSaved(false); }} />
      <div class="dialog-actions">
        {saved && <span class="status-note">{t("saved")}</span>}
        <button class="primary" type="submit" data-testid="save-instructions">{t("save")}</button>
      </div>
    </form>
  );
}

function Keys({ onError }: { onError: (m: string) => void }) {
  const [keys, setKeys] = useState<ApiKey[]>([]);
  const [name, setName] = useState("");
  const [secret, setSecret] = useState("");
  const load = () => api<ApiKey[]>("GET", "/api/keys").then(setKeys).catch((e) => onError(e.message));
  useEffect(() => void load(), []);

  return (
    <div class="stack">
      <form class="inline-form" onSubmit={async (e) => {
        e.preventDefault();
        try {
          const created = await api<ApiKey>("POST", "/api/keys", name.trim() ? { name: name.trim() } : {});
          setSecret(created.key ?? "");
          setName("");
          void load();
        } catch (err) {
          onError(err instanceof Error ? err.message : String(err));
        }
      }}>
        <input placeholder={t("keyName")} aria-label={t("keyName")} data-testid="key-name" value={name}
          onInput={(e) => setName(e.currentTarget.value)} />
        <button class="primary" type="submit" data-testid="create-key">{t("createKey")}</button>
      </form>
      {secret && (
        <div class="secret" role="status">
          <small>{t("newKeyOnce")}</small>
          <code data-testid="new-key">{secret}</code>
        </div>
      )}
      {keys.length === 0 && <p class="muted">{t("noKeys")}</p>}
      <ul class="key-list">
        {keys.map((k) => (
          <li data-testid="api-key" class={k.revoked ? "revoked" : ""}>
            <span>
              <strong>{k.name}</strong> <code>{k.prefix}…</code>
              <small>{t("lastUsed")} {k.last_used_at ? new Date(k.last_used_at).toLocaleString(locale.get()) : t("never")}</small>
            </span>
            {k.revoked ? (
              <span class="muted">{t("revoked")}</span>
            ) : (
              <button class="danger" data-testid="revoke-key" onClick={() =>
                void api("DELETE", `/api/keys/${k.id}`).then(load).catch((e) => onError(e.message))}>
                {t("revoke")}
              </button>
            )}
          </li>
        ))}
      </ul>
    </div>
  );
}
