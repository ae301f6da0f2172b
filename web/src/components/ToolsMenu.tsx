/**
 * The composer's tools button: how many tools this conversation offers the model, and a menu of
 * the server's tools (GET /api/tools) with a switch each. Tools not marked read-only ask the user
 * before every call; the menu says which.
 */
import { useLayoutEffect, useRef, useState } from "preact/hooks";
import type { ToolInfo } from "../api";
import { t, tf } from "../i18n";
import { Icon } from "./Icon";

interface Props {
  tools: ToolInfo[];
  /** Tool sources that could not be loaded: SOURCE → why. */
  failed: Record<string, string>;
  enabled: string[];
  disabled: boolean;
  onChange: (enabled: string[]) => void;
}

export function ToolsMenu({ tools, failed, enabled, disabled, onChange }: Props) {
  const [open, setOpen] = useState(false);
  const root = useRef<HTMLDivElement>(null);
  const on = new Set(enabled);
  const count = tools.filter((tool) => on.has(tool.name)).length;

  // A layout effect, as the dialogs' (Modal): the listeners exist from the moment the menu is drawn. A
  // plain effect ran after paint, and an Escape pressed in between left the menu open, so the next
  // click on the button closed it instead of opening it.
  useLayoutEffect(() => {
    if (!open) return;
    const outside = (e: MouseEvent) => {
      if (!root.current?.contains(e.target as Node)) setOpen(false);
    };
    const escape = (e: KeyboardEvent) => {
      if (e.key === "Escape") setOpen(false);
    };
    document.addEventListener("mousedown", outside);
    document.addEventListener("keydown", escape);
    return () => {
      document.removeEventListener("mousedown", outside);
      document.removeEventListener("keydown", escape);
    };
  }, [open]);

  function toggle(name: string, checked: boolean) {
    // Keep the server's order, so the stored list reads like the menu.
    onChange(tools.map((tool) => tool.name).filter((n) => (n === name ? checked : on.has(n))));
  }

  const label = count ? tf("toolsOn", { n: count }) : t("tools");
  return (
    <div class="tools-menu" ref={root}>
      <button type="button" class={`tools-button ${count ? "active" : ""}`} data-testid="tools-menu"
        aria-haspopup="true" aria-expanded={open} title={label} aria-label={label} onClick={() => setOpen((o) => !o)}>
        <Icon name="wrench" />
        <span class="tools-button-text">{t("tools")}</span>
        {count > 0 && <span class="tools-count" data-testid="tools-count">{count}</span>}
      </button>
      {open && (
        <div class="tools-popover" role="dialog" aria-label={t("tools")} data-testid="tools-list">
          <div class="tools-popover-head">
            <strong>{t("tools")}</strong>
            <span class="muted">{tf("toolsOnOf", { n: count, total: tools.length })}</span>
          </div>
          {tools.length === 0 && <p class="muted tools-empty">{t("noTools")}</p>}
          <ul>
            {tools.map((tool) => (
              <li key={tool.name}>
                <label class="tool-item">
                  <input type="checkbox" data-testid={`tool-toggle-${tool.name}`} checked={on.has(tool.name)}
                    disabled={disabled} onChange={(e) => toggle(tool.name, e.currentTarget.checked)} />
                  <span class="tool-item-text">
                    <span class="tool-item-head">
                      <span class="tool-item-title">{tool.title || tool.name}</span>
                      {tool.read_only ? (
                        <span class="badge read-only" title={t("readOnlyHelp")}>{t("readOnly")}</span>
                      ) : (
                        <span class="badge asks" title={t("asksFirstHelp")}>{t("asksFirst")}</span>
                      )}
                      <span class="tool-source">{sourceLabel(tool.source)}</span>
                    </span>
                    {tool.description && <span class="tool-item-desc" title={tool.description}>{tool.description}</span>}
                  </span>
                </label>
              </li>
            ))}
          </ul>
          {Object.entries(failed).map(([source, why]) => (
            <p class="tools-failed error" key={source}>{tf("toolSourceFailed", { source: sourceLabel(source), why })}</p>
          ))}
        </div>
      )}
    </div>
  );
}

function sourceLabel(source: string): string {
  const [kind, ...rest] = source.split(":");
  const name = rest.join(":");
  if (kind === "builtin") return t("sourceBuiltin");
  if (kind === "mcp") return `MCP · ${name}`;
  if (kind === "openapi") return `${t("sourcePlugin")} · ${name}`;
  return source;
}
