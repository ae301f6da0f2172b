/** Entry point: loads the signed-in user, then shows the auth pages or the chat layout. */
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, MODELS_CHANGED, SIGNED_OUT, type Model, type User } from "./api";
import { Auth } from "./components/Auth";
import { Layout } from "./components/Layout";
import { locale, setLocale } from "./i18n";
import { navigate, path } from "./router";
import { setTheme } from "./theme";
import "./style.css";

function useSignal<T>(s: { get(): T; subscribe(fn: () => void): () => void }): T {
  const [, force] = useState(0);
  useEffect(() => s.subscribe(() => force((n) => n + 1)), [s]);
  return s.get();
}

function App() {
  const [user, setUser] = useState<User | null | undefined>(undefined);
  const [models, setModels] = useState<Model[]>([]);
  const pathname = useSignal(path);
  useSignal(locale);

  useEffect(() => {
    const signedOut = () => setUser(null);
    const reloadModels = () => void api<Model[]>("GET", "/api/models").then(setModels).catch(() => undefined);
    window.addEventListener(SIGNED_OUT, signedOut);
    window.addEventListener(MODELS_CHANGED, reloadModels);
    return () => {
      window.removeEventListener(SIGNED_OUT, signedOut);
      window.removeEventListener(MODELS_CHANGED, reloadModels);
    };
  }, []);

  useEffect(() => {
    api<User>("GET", "/api/me")
      .then(signedIn)
      .catch((e) => {
        if (e instanceof ApiError && e.status === 401) setUser(null);
        else throw e;
      });
  }, []);

  function signedIn(u: User) {
    if (u.locale) setLocale(u.locale);
    if (u.theme) setTheme(u.theme);
    setUser(u);
    api<Model[]>("GET", "/api/models").then(setModels);
  }

  if (user === undefined) return <div class="boot" aria-busy="true" />;
  if (user === null) {
    const mode = pathname === "/signup" ? "signup" : "login";
    return (
      <Auth
        mode={mode}
        onDone={(u) => {
          signedIn(u);
          if (pathname === "/login" || pathname === "/signup") navigate("/", true);
        }}
      />
    );
  }
  if (pathname === "/login" || pathname === "/signup") navigate("/", true);
  return (
    <Layout
      user={user}
      models={models}
      pathname={pathname}
      onUser={setUser}
      onLogout={() => {
        setUser(null);
        navigate("/login");
      }}
    />
  );
}

render(<App />, document.getElementById("app")!);
