/** Admin → Users & settings: usage counts, open or close sign-up, disable accounts, grant admin rights. */
import { useEffect, useState } from "preact/hooks";
import { api, type User } from "../../api";
import { locale, t, type Key } from "../../i18n";

type AdminUser = User & { disabled: boolean };
const STATS = [
  "users", "conversations", "messages", "feedback_up", "feedback_down", "comparisons", "corrections",
  "api_requests", "completion_tokens",
] as const;
type Stats = Record<(typeof STATS)[number], number> & { model: string };

export function Users({ me, onError }: { me: User; onError: (m: string) => void }) {
  const [users, setUsers] = useState<AdminUser[]>([]);
  const [signup, setSignup] = useState<boolean | null>(null);
  const [stats, setStats] = useState<Stats | null>(null);
  const fail = (e: unknown) => onError(e instanceof Error ? e.message : String(e));

  useEffect(() => {
    api<AdminUser[]>("GET", "/api/admin/users").then(setUsers).catch(fail);
    api<Stats>("GET", "/api/admin/stats").then(setStats).catch(fail);
    api<{ signup_enabled: boolean }>("GET", "/api/admin/settings").then((s) => setSignup(s.signup_enabled)).catch(fail);
  }, []);

  async function patchUser(u: AdminUser, change: { disabled?: boolean; is_admin?: boolean }) {
    try {
      const updated = await api<AdminUser>("PATCH", `/api/admin/users/${u.id}`, change);
      setUsers((list) => list.map((x) => (x.id === u.id ? updated : x)));
    } catch (e) {
      fail(e);
    }
  }

  return (
    <div class="stack">
      {stats && (
        <dl class="stats" data-testid="admin-stats" title={stats.model}>
          {STATS.map((name) => (
            <div key={name}>
              <dt>{t(`stat_${name}` as Key)}</dt>
              <dd data-stat={name}>{(stats[name] ?? 0).toLocaleString(locale.get())}</dd>
            </div>
          ))}
        </dl>
      )}
      {signup !== null && (
        <label class="row toggle">
          <span>{t("allowSignup")}</span>
          <input type="checkbox" role="switch" data-testid="signup-enabled" checked={signup}
            onChange={(e) => {
              const value = e.currentTarget.checked;
              api<{ signup_enabled: boolean }>("PATCH", "/api/admin/settings", { signup_enabled: value })
                .then((s) => setSignup(s.signup_enabled))
                .catch(fail);
            }} />
        </label>
      )}
      <table class="user-table">
        <thead>
          <tr>
            <th>{t("email")}</th>
            <th>{t("administrator")}</th>
            <th>{t("disabled")}</th>
          </tr>
        </thead>
        <tbody>
          {users.map((u) => (
            <tr data-testid="admin-user" key={u.id}>
              <td>{u.email}</td>
              <td>
                <input type="checkbox" aria-label={`${t("administrator")}: ${u.email}`} checked={u.is_admin}
                  disabled={u.id === me.id} onChange={(e) => void patchUser(u, { is_admin: e.currentTarget.checked })} />
              </td>
              <td>
                <input type="checkbox" aria-label={`${t("disabled")}: ${u.email}`} data-testid="user-disabled"
                  checked={u.disabled} disabled={u.id === me.id}
                  onChange={(e) => void patchUser(u, { disabled: e.currentTarget.checked })} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
