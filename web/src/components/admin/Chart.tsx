/**
 * Charts of the admin dashboard, drawn with Chart.js (MIT, https://www.chartjs.org).
 *
 * Why Chart.js: the dashboard needs grouped bar charts (canary against stable, p50/p95/p99 per
 * version), line charts over days, legends, tooltips and charts that resize to a phone, all of
 * which Chart.js has built in. uPlot is smaller but draws only time series: grouped bars and
 * tooltips would be plugins of our own; ECharts and Plotly are 5-10 times larger. Only the
 * controllers used here are registered (tree-shaken) and the dashboard is loaded on demand, so
 * the chat itself does not download it. Confidence intervals are drawn as error bars by the small
 * `whiskers` plugin below; colours come from the theme's CSS variables and charts are rebuilt
 * when the theme changes.
 */
import {
  BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, LineController, LineElement, PointElement,
  Tooltip, type ChartConfiguration, type ChartDataset, type ChartType, type Plugin, type TooltipItem,
} from "chart.js";
import { useEffect, useRef, useState } from "preact/hooks";
import type { Interval } from "../../admin-api";
import { locale } from "../../i18n";
import { shownTheme } from "../../theme";

export type Unit = "count" | "percent" | "ms" | "tokps";

export interface Series {
  label: string;
  values: (number | null)[];
  /** A 95% confidence interval per value, drawn as an error bar. */
  intervals?: (Interval | null)[];
  /** Palette slot 1-5 (CSS `--chart-N`). */
  color: number;
}

export interface ChartSpec {
  type: "line" | "bar";
  labels: string[];
  series: Series[];
  unit: Unit;
  /** A dashed horizontal line, e.g. 50% for a win-rate. */
  reference?: number;
  stacked?: boolean;
  /** The value axis reaches at least this far (e.g. an engine's batch size). */
  suggestedMax?: number;
}

interface WhiskerOptions {
  intervals?: ((Interval | null)[] | undefined)[];
  reference?: number;
  color?: string;
}

declare module "chart.js" {
  interface PluginOptionsByType<TType extends ChartType> {
    whiskers?: WhiskerOptions & { _type?: TType };
  }
}

/** Error bars (a vertical line with caps) over points and bars, and an optional reference line. */
const whiskers: Plugin = {
  id: "whiskers",
  afterDatasetsDraw(chart, _args, options: WhiskerOptions) {
    const { ctx, chartArea } = chart;
    const y = chart.scales.y;
    if (!y) return;
    ctx.save();
    ctx.strokeStyle = options.color ?? "#888";
    ctx.lineWidth = 1.5;
    if (options.reference !== undefined) {
      const py = y.getPixelForValue(options.reference);
      ctx.setLineDash([4, 4]);
      ctx.beginPath();
      ctx.moveTo(chartArea.left, py);
      ctx.lineTo(chartArea.right, py);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    options.intervals?.forEach((list, di) => {
      if (!list || !chart.isDatasetVisible(di)) return;
      const meta = chart.getDatasetMeta(di);
      list.forEach((interval, i) => {
        const el = meta.data[i];
        if (!interval || !el) return;
        const width = "width" in el && typeof el.width === "number" ? el.width : 12;
        const cap = Math.max(3, Math.min(8, width / 4));
        const [top, bottom] = [y.getPixelForValue(interval[1]), y.getPixelForValue(interval[0])];
        ctx.beginPath();
        ctx.moveTo(el.x, top);
        ctx.lineTo(el.x, bottom);
        ctx.moveTo(el.x - cap, top);
        ctx.lineTo(el.x + cap, top);
        ctx.moveTo(el.x - cap, bottom);
        ctx.lineTo(el.x + cap, bottom);
        ctx.stroke();
      });
    });
    ctx.restore();
  },
};

Chart.register(BarController, BarElement, CategoryScale, LinearScale, LineController, LineElement, PointElement,
  Legend, Tooltip, whiskers);

export function formatValue(value: number | null | undefined, unit: Unit): string {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const lang = locale.get();
  if (unit === "percent") return `${(value * 100).toLocaleString(lang, { maximumFractionDigits: 1 })}%`;
  if (unit === "ms") {
    return value >= 10_000
      ? `${(value / 1000).toLocaleString(lang, { maximumFractionDigits: 1 })} s`
      : `${Math.round(value).toLocaleString(lang)} ms`;
  }
  if (unit === "tokps") return `${value.toLocaleString(lang, { maximumFractionDigits: 1 })} tok/s`;
  return value.toLocaleString(lang, { maximumFractionDigits: 1 });
}

function formatInterval(interval: Interval | null | undefined, unit: Unit): string {
  return interval ? ` (95% CI ${formatValue(interval[0], unit)} – ${formatValue(interval[1], unit)})` : "";
}

function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function twoLines(label: string): string | string[] {
  const space = label.indexOf(" ");
  return space > 0 ? [label.slice(0, space), label.slice(space + 1)] : label;
}

function build(spec: ChartSpec): ChartConfiguration {
  const fg = cssVar("--fg");
  const muted = cssVar("--muted");
  const grid = cssVar("--border");
  const many = spec.labels.length > 31;
  const few = spec.type === "bar" && spec.labels.length <= 12;
  const datasets = spec.series.map((s): ChartDataset<"line" | "bar", (number | null)[]> => {
    const color = cssVar(`--chart-${s.color}`);
    return spec.type === "line"
      ? { type: "line", label: s.label, data: s.values, borderColor: color, backgroundColor: color,
        borderWidth: 2, pointRadius: many ? 0 : 2.5, pointHoverRadius: 4, tension: 0.25, spanGaps: true }
      : { type: "bar", label: s.label, data: s.values, backgroundColor: color, borderRadius: 3,
        maxBarThickness: 48, categoryPercentage: 0.7, barPercentage: 0.9 };
  });
  const percent = spec.unit === "percent";
  return {
    type: spec.type,
    data: { labels: few ? spec.labels.map(twoLines) : spec.labels, datasets },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: {
          stacked: spec.stacked,
          grid: { display: spec.type === "line", color: grid },
          // A few categories (versions, metrics) are all named, on two lines where they have a space.
          ticks: { color: muted, autoSkip: !few, maxRotation: 0, autoSkipPadding: 8 },
          border: { color: grid },
        },
        y: {
          stacked: spec.stacked,
          beginAtZero: true,
          ...(percent ? { min: 0, max: 1 } : {}),
          suggestedMax: spec.suggestedMax,
          grid: { color: grid },
          border: { display: false },
          ticks: {
            color: muted, maxTicksLimit: 6, precision: spec.unit === "count" ? 0 : undefined,
            callback: (v) => formatValue(Number(v), spec.unit),
          },
        },
      },
      plugins: {
        legend: {
          display: spec.series.length > 1,
          position: "bottom",
          labels: { color: fg, boxWidth: 12, boxHeight: 12, padding: 10 },
        },
        tooltip: {
          callbacks: {
            label: (item: TooltipItem<ChartType>) => {
              const s = spec.series[item.datasetIndex];
              const value = s.values[item.dataIndex];
              return `${s.label}: ${formatValue(value, spec.unit)}${formatInterval(s.intervals?.[item.dataIndex], spec.unit)}`;
            },
          },
        },
        whiskers: { intervals: spec.series.map((s) => s.intervals), reference: spec.reference, color: fg },
      },
    },
  };
}

function useTheme(): string {
  const [theme, setTheme] = useState(shownTheme.get());
  useEffect(() => shownTheme.subscribe(() => setTheme(shownTheme.get())), []);
  return theme;
}

interface Props {
  spec: ChartSpec;
  title: string;
  testid?: string;
  height?: number;
}

/** One chart in a titled figure; rebuilt when its spec (memoise it) or the theme changes. */
export function ChartBox({ spec, title, testid, height = 220 }: Props) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const theme = useTheme();
  useEffect(() => {
    if (!canvas.current) return;
    const chart = new Chart(canvas.current, build(spec));
    return () => chart.destroy();
  }, [spec, theme]);
  return (
    <figure class="chart" data-testid={testid ?? "chart"}>
      <figcaption>{title}</figcaption>
      <div class="chart-canvas" style={{ height: `${height}px` }}>
        <canvas ref={canvas} role="img" aria-label={title} />
      </div>
    </figure>
  );
}
