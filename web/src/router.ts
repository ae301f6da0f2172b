/** Client-side routes: `/`, `/login`, `/signup`, `/c/{id}` (the server falls back to index.html). */
import { signal } from "./signal";

export const path = signal(location.pathname);

export function navigate(to: string, replace = false): void {
  if (to === location.pathname) return;
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  path.set(to);
}

window.addEventListener("popstate", () => path.set(location.pathname));

export function conversationIdOf(pathname: string): string | null {
  const match = pathname.match(/^\/c\/([^/]+)\/?$/);
  return match ? decodeURIComponent(match[1]) : null;
}
