// The types a dashboard of deploy/grafana/dashboards must satisfy, from Grafana's published
// schema (@grafana/schema, the TypeScript it generates from its CUE kinds). The test
// tests/deploy/test_grafana_schema.py writes each dashboard as an object literal checked with
// `satisfies` against these types (excess-property checks included: a misspelt key fails) and
// runs `tsc --noEmit`.
import type { Dashboard } from '@grafana/schema';
import type * as BarGauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

/** A type as JSON spells it: a string enum's members are their string values. */
export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

export type DashboardJson = Json<Dashboard>;

/** Each panel type the dashboards use: its options and its field config's `custom` part. */
export interface PanelTypes {
  timeseries: { options: Json<TimeSeries.Options>; custom: Json<Partial<TimeSeries.FieldConfig>> };
  stat: { options: Json<Stat.Options>; custom: Record<string, never> };
  bargauge: { options: Json<BarGauge.Options>; custom: Record<string, never> };
}
