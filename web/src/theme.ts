/** Light/dark theme: `system` follows prefers-color-scheme; the choice is kept per user and locally. */
import { signal } from "./signal";

export type Theme = "light" | "dark" | "system";

/** The theme in effect (what `system` resolved to), for what cannot follow CSS (chart canvases). */
export const shownTheme = signal<"light" | "dark">("light");

const media = window.matchMedia("(prefers-color-scheme: dark)");
let current: Theme = (localStorage.getItem("chatloop.theme") as Theme | null) ?? "system";

function apply(): void {
  const dark = current === "dark" || (current === "system" && media.matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  if (shownTheme.get() !== document.documentElement.dataset.theme) shownTheme.set(dark ? "dark" : "light");
}

export function setTheme(theme: string): void {
  current = theme === "light" || theme === "dark" ? theme : "system";
  localStorage.setItem("chatloop.theme", current);
  apply();
}

export function getTheme(): Theme {
  return current;
}

media.addEventListener("change", apply);
apply();
