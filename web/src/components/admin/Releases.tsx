/**
 * Release controls (GET /api/admin/releases): per registered model its channels (stable, canary
 * and its share), its versions with lineage and stored evaluations, and the actions — start a
 * canary, promote, end the canary / roll back — each behind a confirmation; then the audit log.
 */
import { useEffect, useState } from "preact/hooks";
import { api, MODELS_CHANGED } from "../../api";
import type { ModelVersion, ReleaseEvent, ReleaseModel, Releases as ReleasesData } from "../../admin-api";
import { locale, t, type Key } from "../../i18n";
import { ReleaseDialog, type ReleaseAction } from "./ReleaseDialog";

export function Releases({ onError }: { onError: (m: string) => void }) {
  const [data, setData] = useState<ReleasesData | null>(null);
  const [action, setAction] = useState<ReleaseAction | null>(null);
  const load = () =>
    api<ReleasesData>("GET", "/api/admin/releases").then(setData).catch((e) => onError(e instanceof Error ? e.message : String(e)));
  useEffect(() => void load(), []);

  if (!data) return <p class="muted">{t("loading")}</p>;
  return (
    <div class="releases" data-testid="releases">
      <p class="muted intro">{t("releasesIntro")}</p>
      {data.models.length === 0 && <p class="muted">{t("noModels")}</p>}
      {data.models.map((m) => (
        <ModelReleases key={m.name} model={m} previous={previousStable(data.events, m.name)} onAction={setAction} />
      ))}
      <h3>{t("auditLog")}</h3>
      <AuditLog events={data.events} />
      {action && (
        <ReleaseDialog
          action={action}
          onClose={() => setAction(null)}
          onFailed={() => void load()}
          onDone={() => {
            setAction(null);
            void load();
            window.dispatchEvent(new Event(MODELS_CHANGED)); // the model picker shows the channels
          }}
        />
      )}
    </div>
  );
}

/** What a rollback of stable goes back to, replayed from the audit log like the server does (null
 *  when there is nothing to go back to, or the log shown is too short to tell). */
function previousStable(events: ReleaseEvent[], name: string): string | null {
  const stack: string[] = [];
  for (const e of [...events].reverse()) {
    if (e.name !== name) continue;
    if (e.action === "promote" && e.version) stack.push(e.version);
    else if (e.action === "rollback") stack.pop();
  }
  return stack.length >= 2 ? stack[stack.length - 2] : null;
}

function ModelReleases({ model: m, previous, onAction }: {
  model: ReleaseModel;
  previous: string | null;
  onAction: (a: ReleaseAction) => void;
}) {
  const versions = [...m.versions].sort((a, b) => b.version.localeCompare(a.version, undefined, { numeric: true }));
  return (
    <section class="release-model" data-testid="release-model" data-name={m.name}>
      <header class="release-head">
        <h3>{m.name}</h3>
        <span class="chip stable" data-testid="channel-stable">
          {t("stable")} <code>{m.stable ? `${m.name}:${m.stable}` : t("channelNone")}</code>
        </span>
        {m.canary && (
          <span class="chip canary" data-testid="channel-canary">
            {t("canaryChannel")} <code>{`${m.name}:${m.canary}`}</code> · {m.canary_percent}%
          </span>
        )}
        <button class="danger" data-testid="rollback" disabled={!m.canary && !m.stable}
          onClick={() => onAction({ kind: "rollback", model: m, previous })}>
          {m.canary ? t("endCanary") : t("rollback")}
        </button>
      </header>
      <div class="table-scroll">
        <table class="data-table versions-table stack-on-phone">
          <thead>
            <tr>
              <th>{t("version")}</th>
              <th>{t("channel")}</th>
              <th>{t("stage")}</th>
              <th>{t("source")}</th>
              <th>{t("created")}</th>
              <th>{t("evaluations")}</th>
              <th>{t("actions")}</th>
            </tr>
          </thead>
          <tbody>
            {versions.map((v) => <VersionRow key={v.id} model={m} version={v} onAction={onAction} />)}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function VersionRow({ model: m, version: v, onAction }: {
  model: ReleaseModel;
  version: ModelVersion;
  onAction: (a: ReleaseAction) => void;
}) {
  const isStable = m.stable === v.version;
  const isCanary = m.canary === v.version;
  const lang = locale.get();
  return (
    <tr data-testid="release-version" data-version={v.id} class={isStable ? "is-stable" : isCanary ? "is-canary" : ""}>
      <td data-label={t("version")}><code>{v.id}</code>{v.parent && <small>← {v.parent}</small>}</td>
      <td data-label={t("channel")} data-testid="version-channel">
        {isStable && <span class="badge stable">{t("stable")}</span>}
        {isCanary && <span class="badge canary">{t("canaryChannel")} {m.canary_percent}%</span>}
      </td>
      <td data-label={t("stage")}>{v.stage ?? "–"}</td>
      <td data-label={t("source")} class="wrap" title={v.data_hash ?? undefined}>{v.source ?? "–"}</td>
      <td data-label={t("created")} title={new Date(v.created_at).toLocaleString(lang)}>
        <span>
          {new Date(v.created_at).toLocaleDateString(lang)}
          {v.created_by && <small>{v.created_by}</small>}
        </span>
      </td>
      <td data-label={t("evaluations")}>
        {v.evals.length === 0 ? <span class="muted">{t("notEvaluated")}</span> : (
          <ul class="evals">
            {v.evals.slice(0, 4).map((e) => (
              <li title={`n=${e.n} · ${new Date(e.at).toLocaleString(lang)}`}>
                {e.suite} <strong>{e.score.toLocaleString(lang, { maximumFractionDigits: 3 })}</strong>
                {e.ci && e.ci[0] !== null && e.ci[1] !== null && (
                  <small class="inline">
                    [{e.ci[0].toLocaleString(lang, { maximumFractionDigits: 3 })}, {e.ci[1].toLocaleString(lang, { maximumFractionDigits: 3 })}]
                  </small>
                )}
              </li>
            ))}
          </ul>
        )}
      </td>
      <td data-label={t("actions")}>
        <div class="row-actions">
          <button data-testid="start-canary" disabled={isStable || !m.stable}
            onClick={() => onAction({ kind: "canary", model: m, version: v.version })}>
            {t("startCanary")}
          </button>
          <button data-testid="promote" disabled={isStable}
            onClick={() => onAction({ kind: "promote", model: m, version: v.version })}>
            {t("promote")}
          </button>
        </div>
      </td>
    </tr>
  );
}

function AuditLog({ events }: { events: ReleaseEvent[] }) {
  const lang = locale.get();
  if (events.length === 0) return <p class="muted">{t("noEvents")}</p>;
  const label = (action: string) => {
    const key = `action_${action.replace(/-/g, "_")}`;
    return key in ACTIONS ? t(key as Key) : action;
  };
  return (
    <div class="table-scroll">
      <table class="data-table audit-log stack-on-phone" data-testid="audit-log">
        <thead>
          <tr>
            <th>{t("colTime")}</th>
            <th>{t("model")}</th>
            <th>{t("colAction")}</th>
            <th>{t("version")}</th>
            <th>{t("colPrevious")}</th>
            <th>{t("colPercent")}</th>
            <th>{t("colActor")}</th>
            <th>{t("colReason")}</th>
          </tr>
        </thead>
        <tbody>
          {events.map((e) => (
            <tr key={e.id} data-testid="audit-event" data-action={e.action}>
              <td data-label={t("colTime")} class="nowrap">{new Date(e.at).toLocaleString(lang)}</td>
              <td data-label={t("model")}>{e.name}</td>
              <td data-label={t("colAction")}><span class={`badge action-${e.action}`}>{label(e.action)}</span></td>
              <td data-label={t("version")}>{e.version ? <code>{`${e.name}:${e.version}`}</code> : "–"}</td>
              <td data-label={t("colPrevious")}>{e.previous ? <code>{`${e.name}:${e.previous}`}</code> : "–"}</td>
              <td data-label={t("colPercent")}>{e.percent !== null ? `${e.percent}%` : "–"}</td>
              <td data-label={t("colActor")}>{e.actor}</td>
              <td data-label={t("colReason")} class="wrap">{e.reason || "–"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

const ACTIONS = { action_promote: 1, action_canary: 1, action_end_canary: 1, action_rollback: 1, action_register: 1 };
