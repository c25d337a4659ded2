"""PromQL over the stored history: the subset Grafana's dashboards need, with the semantics of
Prometheus 2.42 (README "Prometheus-compatible API").

- ``syntax``: the query parsed by ``promql_parser`` and turned into our own typed nodes; what
  lies outside the subset is refused there, naming the feature.
- ``matchers``, ``catalog``, ``source``: which stored series a selector names, under the
  exporter's metric names and labels, and their raw samples (head and chunks).
- ``values``: the values an expression evaluates to, over every step at once.
- ``windows``, ``functions``, ``aggregations``, ``binary``: the operations.
- ``evaluation``: the walk over the nodes; ``wire``: Prometheus' JSON.
- ``timing``: Prometheus' grammar of ``time``, ``start``, ``end`` and ``step``.
"""
