/** A minimal observable value, so app-wide settings (locale, theme) re-render the whole app. */
export interface Signal<T> {
  get(): T;
  set(value: T): void;
  subscribe(fn: () => void): () => void;
}

export function signal<T>(value: T): Signal<T> {
  const listeners = new Set<() => void>();
  return {
    get: () => value,
    set(next: T) {
      value = next;
      for (const fn of listeners) fn();
    },
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  };
}
