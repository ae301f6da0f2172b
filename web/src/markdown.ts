/**
 * Markdown to safe HTML: `marked` parses, `highlight.js` colours code, `DOMPurify` sanitises the
 * result, so raw HTML or scripts in a message render inert. Code blocks get a copy button whose
 * clicks are handled by `handleCopyClick` (event delegation; sanitised HTML carries no handlers).
 */
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/common";
import { Marked, type Tokens } from "marked";

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function codeBlock(copyLabel: string) {
  return ({ text, lang }: Tokens.Code): string => {
    const language = (lang ?? "").trim().split(/\s+/)[0];
    const html =
      language && hljs.getLanguage(language)
        ? hljs.highlight(text, { language, ignoreIllegals: true }).value
        : escapeHtml(text);
    return (
      `<div class="code-block"><div class="code-head"><span>${escapeHtml(language || "text")}</span>` +
      `<button type="button" class="copy-code" data-copy-code="1">${escapeHtml(copyLabel)}</button></div>` +
      `<pre><code class="hljs">${html}</code></pre></div>`
    );
  };
}

const parsers = new Map<string, Marked>();

function parserFor(copyLabel: string): Marked {
  let parser = parsers.get(copyLabel);
  if (!parser) {
    parser = new Marked({ gfm: true, breaks: false, renderer: { code: codeBlock(copyLabel) } });
    parsers.set(copyLabel, parser);
  }
  return parser;
}

// Links open in a new tab without giving the target page a handle on ours.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.getAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function renderMarkdown(source: string, copyLabel: string): string {
  const html = parserFor(copyLabel).parse(source, { async: false }) as string;
  return DOMPurify.sanitize(html, { ADD_ATTR: ["target"], FORBID_TAGS: ["style", "form", "input"] });
}

export async function copyText(text: string): Promise<void> {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain-http deployments have no Clipboard API: fall back to a selected hidden textarea.
  const area = document.createElement("textarea");
  area.value = text;
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

export function handleCopyClick(event: MouseEvent, copiedLabel: string): void {
  const button = (event.target as HTMLElement).closest<HTMLButtonElement>("button[data-copy-code]");
  if (!button) return;
  const code = button.closest(".code-block")?.querySelector("code");
  if (!code) return;
  const label = button.textContent;
  void copyText(code.textContent ?? "").then(() => {
    button.textContent = copiedLabel;
    setTimeout(() => (button.textContent = label), 1500);
  });
}
