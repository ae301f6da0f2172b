/**
 * The admin dashboard (GET /api/admin/dashboard): activity per day, canary against stable, the
 * thumbs-up rate per version with its interval, latency / time to first token / decode speed per
 * version and the engines' queues now; a period selector (7/30/90 days) and CSV downloads.
 * Loaded on demand (it brings Chart.js).
 */
import { useEffect, useMemo, useState } from "preact/hooks";
import { api } from "../../api";
import type { DashboardData, VersionStats } from "../../admin-api";
import { locale, t, tf } from "../../i18n";
import { CanaryCard } from "./CanaryCard";
import { ChartBox, formatValue, type ChartSpec } from "./Chart";

const PERIODS = [7, 30, 90] as const;

export function Dashboard({ onError }: { onError: (m: string) => void }) {
  const [days, setDays] = useState<number>(30);
  const [data, setData] = useState<DashboardData | null>(null);
  const [loading, setLoading] = useState(false);
  const [tick, setTick] = useState(0);

  useEffect(() => {
    let current = true;
    setLoading(true);
    api<DashboardData>("GET", `/api/admin/dashboard?days=${days}`)
      .then((d) => current && setData(d))
      .catch((e) => current && onError(e instanceof Error ? e.message : String(e)))
      .finally(() => current && setLoading(false));
    return () => {
      current = false;
    };
  }, [days, tick]);

  return (
    <div class="dashboard" data-testid="dashboard" aria-busy={loading}>
      <div class="dash-toolbar">
        <div class="segmented" role="group" aria-label={t("dashPeriod")}>
          {PERIODS.map((d) => (
            <button type="button" aria-pressed={days === d} class={days === d ? "selected" : ""}
              data-testid={`days-${d}`} onClick={() => setDays(d)}>
              {d} {t("days")}
            </button>
          ))}
        </div>
        <span class="dash-toolbar-end">
          <a class="button-link" data-testid="csv-daily" href={`/api/admin/dashboard.csv?days=${days}&table=daily`} download>
            {t("csvDaily")}
          </a>
          <a class="button-link" data-testid="csv-versions" href={`/api/admin/dashboard.csv?days=${days}&table=versions`}
            download>
            {t("csvVersions")}
          </a>
          <button type="button" data-testid="dash-refresh" onClick={() => setTick((n) => n + 1)} disabled={loading}>
            {t("refresh")}
          </button>
        </span>
      </div>
      {!data && <p class="muted">{t("loading")}</p>}
      {data && <Sections data={data} />}
    </div>
  );
}

function Sections({ data }: { data: DashboardData }) {
  const lang = locale.get();
  const daily = data.daily;
  const versions = Object.entries(data.versions).sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }));

  const activity = useMemo<ChartSpec>(() => ({
    type: "line",
    labels: daily.map((d) => d.day.slice(5)),
    unit: "count",
    series: [
      { label: t("activeUsers"), values: daily.map((d) => d.active_users), color: 1 },
      { label: t("newConversations"), values: daily.map((d) => d.conversations), color: 2 },
      { label: t("messages"), values: daily.map((d) => d.messages), color: 3 },
    ],
  }), [data, lang]);

  const tokens = useMemo<ChartSpec>(() => ({
    type: "bar",
    labels: daily.map((d) => d.day.slice(5)),
    unit: "count",
    series: [{ label: t("tokens"), values: daily.map((d) => d.tokens), color: 4 }],
  }), [data, lang]);

  const rated = versions.filter(([, v]) => v.thumbs_up + v.thumbs_down > 0);
  const thumbs = useMemo<ChartSpec>(() => ({
    type: "bar",
    labels: rated.map(([id, v]) => `${id} (n=${v.thumbs_up + v.thumbs_down})`),
    unit: "percent",
    series: [{ label: t("thumbsUpRate"), values: rated.map(([, v]) => v.thumbs_up_rate),
      intervals: rated.map(([, v]) => v.thumbs_up_ci), color: 1 }],
  }), [data, lang]);

  const percentiles = (pick: (v: VersionStats) => VersionStats["latency_ms"], key: "latencyP" | "ttftP"): ChartSpec => ({
    type: "bar",
    labels: versions.map(([id]) => id),
    unit: "ms",
    series: (["p50", "p95", "p99"] as const).map((p, i) => ({
      label: tf(key, { p }), values: versions.map(([, v]) => pick(v)[p]), color: i + 1,
    })),
  });
  const latency = useMemo(() => percentiles((v) => v.latency_ms, "latencyP"), [data, lang]);
  const ttft = useMemo(() => percentiles((v) => v.ttft_ms, "ttftP"), [data, lang]);
  const speed = useMemo<ChartSpec>(() => ({
    type: "bar",
    labels: versions.map(([id]) => id),
    unit: "tokps",
    series: [{ label: t("tokensPerS"), values: versions.map(([, v]) => v.tokens_per_s), color: 2 }],
  }), [data, lang]);

  const engines = Object.entries(data.engine.engines ?? {});
  const queue = useMemo<ChartSpec>(() => ({
    type: "bar",
    labels: engines.map(([id]) => id),
    unit: "count",
    stacked: true,
    suggestedMax: Math.max(1, ...engines.map(([, e]) => e.max_batch ?? 1)),
    series: [
      { label: t("queueActive"), values: engines.map(([, e]) => e.active), color: 1 },
      { label: t("queueWaiting"), values: engines.map(([, e]) => e.waiting), color: 5 },
    ],
  }), [data, lang]);

  const sum = (k: "conversations" | "messages" | "tokens") => daily.reduce((n, d) => n + d[k], 0);
  return (
    <>
      <section class="dash-section" aria-labelledby="dash-activity">
        <h3 id="dash-activity">{t("dashActivity")}</h3>
        <dl class="stats" data-testid="dash-totals">
          <Tile label={t("peakActiveUsers")} value={Math.max(0, ...daily.map((d) => d.active_users))} />
          <Tile label={t("newConversations")} value={sum("conversations")} />
          <Tile label={t("messages")} value={sum("messages")} />
          <Tile label={t("tokens")} value={sum("tokens")} />
        </dl>
        <div class="chart-grid">
          <ChartBox spec={activity} title={t("dashActivityChart")} testid="chart-activity" />
          <ChartBox spec={tokens} title={t("dashTokensChart")} testid="chart-tokens" />
        </div>
      </section>

      <section class="dash-section" aria-labelledby="dash-canaries">
        <h3 id="dash-canaries">{t("dashCanaries")}</h3>
        {data.canaries.length === 0 && <p class="muted">{t("noCanary")}</p>}
        {data.canaries.map((c) => <CanaryCard key={c.name} canary={c} />)}
      </section>

      <section class="dash-section" aria-labelledby="dash-thumbs">
        <h3 id="dash-thumbs">{t("dashThumbs")}</h3>
        {rated.length === 0 ? <p class="muted">{t("noRatings")}</p> : (
          <ChartBox spec={thumbs} title={t("dashThumbs")} testid="chart-thumbs" height={240} />
        )}
      </section>

      <section class="dash-section" aria-labelledby="dash-speed">
        <h3 id="dash-speed">{t("dashSpeed")}</h3>
        {versions.length === 0 ? <p class="muted">{t("noAnswers")}</p> : (
          <div class="chart-grid">
            <ChartBox spec={latency} title={t("latencyByVersion")} testid="chart-latency" />
            <ChartBox spec={ttft} title={t("ttftByVersion")} testid="chart-ttft" />
            <ChartBox spec={speed} title={t("tokpsByVersion")} testid="chart-speed" />
          </div>
        )}
        <h4>{t("queueNow")}</h4>
        <dl class="stats" data-testid="dash-queue">
          <Tile label={t("queueActive")} value={data.engine.active} stat="active" />
          <Tile label={t("queueWaiting")} value={data.engine.waiting} stat="waiting" />
          <Tile label={t("queueLoaded")} value={data.engine.loaded.length} title={data.engine.loaded.join(", ")} />
        </dl>
        {engines.length > 0 && <ChartBox spec={queue} title={t("queueChart")} testid="chart-queue" height={160} />}
        {versions.length > 0 && <VersionTable versions={versions} />}
      </section>
    </>
  );
}

function Tile({ label, value, stat, title }: { label: string; value: number; stat?: string; title?: string }) {
  return (
    <div title={title}>
      <dt>{label}</dt>
      <dd data-stat={stat}>{value.toLocaleString(locale.get())}</dd>
    </div>
  );
}

/** The numbers behind the version charts (also what the versions CSV holds). */
function VersionTable({ versions }: { versions: [string, VersionStats][] }) {
  return (
    <div class="table-scroll">
      <table class="data-table stack-on-phone" data-testid="version-table">
        <thead>
          <tr>
            <th>{t("version")}</th>
            <th>{t("answers")}</th>
            <th>{t("thumbsUpRate")}</th>
            <th>{tf("latencyP", { p: "p50" })}</th>
            <th>{tf("latencyP", { p: "p95" })}</th>
            <th>{tf("ttftP", { p: "p50" })}</th>
            <th>{t("tokensPerS")}</th>
          </tr>
        </thead>
        <tbody>
          {versions.map(([id, v]) => (
            <tr key={id}>
              <td data-label={t("version")}><code>{id}</code></td>
              <td data-label={t("answers")}>{v.answers.toLocaleString(locale.get())}</td>
              <td data-label={t("thumbsUpRate")}>
                <span>
                  {formatValue(v.thumbs_up_rate, "percent")}
                  {v.thumbs_up_ci && (
                    <small class="inline">
                      {formatValue(v.thumbs_up_ci[0], "percent")}–{formatValue(v.thumbs_up_ci[1], "percent")}
                    </small>
                  )}
                </span>
              </td>
              <td data-label={tf("latencyP", { p: "p50" })}>{formatValue(v.latency_ms.p50, "ms")}</td>
              <td data-label={tf("latencyP", { p: "p95" })}>{formatValue(v.latency_ms.p95, "ms")}</td>
              <td data-label={tf("ttftP", { p: "p50" })}>{formatValue(v.ttft_ms.p50, "ms")}</td>
              <td data-label={t("tokensPerS")}>{formatValue(v.tokens_per_s, "tokps")}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
