// Vite build for the chat UI: `npm run build` writes web/dist/, which the server serves at `/`
// (with an SPA fallback for /c/{id}). `npm run dev` proxies /api to a running `chatloop serve`.
import { defineConfig } from "vite";

export default defineConfig({
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true },
  server: { proxy: { "/api": "http://127.0.0.1:8000", "/healthz": "http://127.0.0.1:8000" } },
});
