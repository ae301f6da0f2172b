/** Sign-in and sign-up pages (POST /api/auth/login|signup), with a language switch. */
import { useState } from "preact/hooks";
import { api, type User } from "../api";
import { LOCALES, locale, setLocale, t } from "../i18n";
import { navigate } from "../router";

export function Auth({ mode, onDone }: { mode: "login" | "signup"; onDone: (u: User) => void }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const signup = mode === "signup";

  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      onDone(await api<User>("POST", `/api/auth/${signup ? "signup" : "login"}`, { email, password }));
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main class="auth">
      <form class="auth-card" onSubmit={submit}>
        <div class="brand">{t("appName")}</div>
        <h1>{signup ? t("createAccount") : t("welcomeBack")}</h1>
        <label>
          {t("email")}
          <input
            name="email"
            type="email"
            autocomplete="email"
            required
            value={email}
            onInput={(e) => setEmail(e.currentTarget.value)}
          />
        </label>
        <label>
          {t("password")}
          <input
            name="password"
            type="password"
            autocomplete={signup ? "new-password" : "current-password"}
            required
            minLength={signup ? 8 : undefined}
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
          {signup && <small>{t("passwordHint")}</small>}
        </label>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button class="primary" type="submit" disabled={busy} data-testid="auth-submit">
          {signup ? t("signUp") : t("signIn")}
        </button>
        <p class="switch">
          {signup ? t("haveAccount") : t("noAccount")}{" "}
          <a
            href={signup ? "/login" : "/signup"}
            onClick={(e) => {
              e.preventDefault();
              setError("");
              navigate(signup ? "/login" : "/signup");
            }}
          >
            {signup ? t("signIn") : t("signUp")}
          </a>
        </p>
        <select
          class="locale-select"
          aria-label="Language / 语言"
          value={locale.get()}
          onChange={(e) => setLocale(e.currentTarget.value)}
        >
          {LOCALES.map((l) => (
            <option value={l.id}>{l.label}</option>
          ))}
        </select>
      </form>
    </main>
  );
}
