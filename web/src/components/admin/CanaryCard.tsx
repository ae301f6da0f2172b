/**
 * One running canary against its stable version, side by side: thumbs-up rate and the win-rate in
 * side-by-side votes (each with its 95% interval; stable's win-rate is the canary's loss rate),
 * latency p50/p95 and time to first token, decode speed, and the vote tally.
 */
import { useMemo } from "preact/hooks";
import type { CanaryStats, Interval, VersionStats } from "../../admin-api";
import { locale, t, tf } from "../../i18n";
import { ChartBox, formatValue, type ChartSpec } from "./Chart";

export function CanaryCard({ canary: c }: { canary: CanaryStats }) {
  const lang = locale.get();
  const sides: { label: string; stats: VersionStats | null; color: number }[] = [
    { label: `${t("stable")} ${c.stable}`, stats: c.stable_stats, color: 1 },
    { label: `${t("canaryChannel")} ${c.canary}`, stats: c.canary_stats, color: 2 },
  ];
  const v = c.votes;
  const flip = (i: Interval | null): Interval | null => (i ? [1 - i[1], 1 - i[0]] : null);

  const quality = useMemo<ChartSpec>(() => ({
    type: "bar",
    labels: [t("thumbsUpRate"), t("winRate")],
    unit: "percent",
    reference: 0.5,
    series: sides.map((s, i) => ({
      label: s.label,
      color: s.color,
      values: [s.stats?.thumbs_up_rate ?? null, v.win_rate === null ? null : i === 0 ? 1 - v.win_rate : v.win_rate],
      intervals: [s.stats?.thumbs_up_ci ?? null, i === 0 ? flip(v.win_rate_ci) : v.win_rate_ci],
    })),
  }), [c, lang]);

  const latency = useMemo<ChartSpec>(() => ({
    type: "bar",
    labels: [tf("latencyP", { p: "p50" }), tf("latencyP", { p: "p95" }), tf("ttftP", { p: "p50" })],
    unit: "ms",
    series: sides.map((s) => ({
      label: s.label, color: s.color,
      values: [s.stats?.latency_ms.p50 ?? null, s.stats?.latency_ms.p95 ?? null, s.stats?.ttft_ms.p50 ?? null],
    })),
  }), [c, lang]);

  const speed = useMemo<ChartSpec>(() => ({
    type: "bar",
    labels: [t("tokensPerS")],
    unit: "tokps",
    series: sides.map((s) => ({ label: s.label, color: s.color, values: [s.stats?.tokens_per_s ?? null] })),
  }), [c, lang]);

  return (
    <article class="canary-card" data-testid="canary-card" data-name={c.name}>
      <h4>{tf("canaryTitle", { name: c.name, canary: c.canary, percent: c.percent, stable: c.stable })}</h4>
      <div class="chart-grid">
        <ChartBox spec={quality} title={t("qualityChart")} testid="chart-canary-quality" />
        <ChartBox spec={latency} title={t("canaryLatencyChart")} testid="chart-canary-latency" />
        <ChartBox spec={speed} title={t("speedChart")} testid="chart-canary-speed" />
      </div>
      <p class="muted" data-testid="canary-votes">
        {v.votes === 0 ? t("noVotes") : tf("votesSummary", {
          votes: v.votes, wins: v.wins, losses: v.losses,
          rate: `${formatValue(v.win_rate, "percent")}${v.win_rate_ci
            ? ` (95% CI ${formatValue(v.win_rate_ci[0], "percent")}–${formatValue(v.win_rate_ci[1], "percent")})` : ""}`,
        })}
      </p>
    </article>
  );
}
