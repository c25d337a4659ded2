"""Pure history arithmetic: the sample codec, the quantile sketch, the one block-statistics
type, bucketing and the one deduplication rule. No SQL and no I/O: the store and the query
layer orchestrate it."""
