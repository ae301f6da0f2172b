/**
 * Administration (admins only), in sections: Users & settings (usage counts, sign-up, accounts),
 * Dashboard (charts; loaded on demand as it brings the chart library) and Releases (channels,
 * promote / canary / rollback, audit log).
 */
import type { FunctionComponent } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { User } from "../api";
import { t } from "../i18n";
import { Releases } from "./admin/Releases";
import { Users } from "./admin/Users";

type Section = "users" | "dashboard" | "releases";
const SECTIONS: { id: Section; label: "adminUsers" | "adminDashboard" | "adminReleases" }[] = [
  { id: "users", label: "adminUsers" },
  { id: "dashboard", label: "adminDashboard" },
  { id: "releases", label: "adminReleases" },
];

type DashboardView = FunctionComponent<{ onError: (m: string) => void }>;

export function Admin({ me, onError }: { me: User; onError: (m: string) => void }) {
  const [section, setSection] = useState<Section>("users");
  const [Dashboard, setDashboard] = useState<DashboardView | null>(null);

  useEffect(() => {
    if (section !== "dashboard" || Dashboard) return;
    import("./admin/Dashboard")
      .then((mod) => setDashboard(() => mod.Dashboard))
      .catch((e) => onError(e instanceof Error ? e.message : String(e)));
  }, [section]);

  return (
    <div class="admin">
      <nav class="subtabs" role="tablist" aria-label={t("adminSections")}>
        {SECTIONS.map((s) => (
          <button role="tab" aria-selected={section === s.id} class={section === s.id ? "selected" : ""}
            data-testid={`admin-tab-${s.id}`} onClick={() => { onError(""); setSection(s.id); }}>
            {t(s.label)}
          </button>
        ))}
      </nav>
      {section === "users" && <Users me={me} onError={onError} />}
      {section === "dashboard" && (Dashboard ? <Dashboard onError={onError} /> : <p class="muted">{t("loading")}</p>)}
      {section === "releases" && <Releases onError={onError} />}
    </div>
  );
}
