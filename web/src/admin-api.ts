/** Types of the administrators' endpoints (docs/api.md: "Releases (admin)", "Dashboard (admin)"). */

export type Interval = [number, number];

export interface EvalResult {
  suite: string;
  score: number;
  n: number;
  ci: [number | null, number | null] | null;
  settings: unknown;
  at: string;
}

export interface ModelVersion {
  id: string; // NAME:VERSION
  name: string;
  version: string;
  parent: string | null;
  stage: string | null;
  source: string | null;
  data_hash: string | null;
  created_by: string | null;
  created_at: string;
  metrics: Record<string, unknown> | null;
  evals: EvalResult[];
}

export interface ReleaseModel {
  name: string;
  stable: string | null; // a bare version ("3")
  canary: string | null;
  canary_percent: number;
  versions: ModelVersion[];
}

export interface ReleaseEvent {
  id: number;
  name: string;
  action: string; // promote, canary, end-canary, rollback
  version: string | null;
  previous: string | null;
  percent: number | null;
  actor: string;
  reason: string;
  at: string;
}

export interface Releases {
  models: ReleaseModel[];
  events: ReleaseEvent[];
  serving: Record<string, { stable: string | null; canary: string | null; canary_percent: number }>;
}

export interface Day {
  day: string; // YYYY-MM-DD (UTC)
  active_users: number;
  conversations: number;
  messages: number;
  tokens: number;
}

export interface Percentiles {
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface VersionStats {
  answers: number;
  thumbs_up: number;
  thumbs_down: number;
  thumbs_up_rate: number | null;
  thumbs_up_ci: Interval | null;
  latency_ms: Percentiles;
  ttft_ms: Percentiles;
  tokens_per_s: number | null;
}

export interface Votes {
  votes: number;
  wins: number;
  losses: number;
  win_rate: number | null;
  win_rate_ci: Interval | null;
}

export interface CanaryStats {
  name: string;
  percent: number;
  stable: string; // NAME:VERSION
  canary: string;
  stable_stats: VersionStats | null;
  canary_stats: VersionStats | null;
  votes: Votes;
}

export interface EngineStats {
  active: number;
  waiting: number;
  loaded: string[];
  engines: Record<string, { active: number; waiting: number; max_batch?: number }>;
}

export interface DashboardData {
  days: number;
  since: string;
  daily: Day[];
  versions: Record<string, VersionStats>;
  canaries: CanaryStats[];
  engine: EngineStats;
  releases: Record<string, unknown>;
}
